"""Repository of API keys over SQLAlchemy (async): create, list, get, revoke, find by digest."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from tkr_embed.db import Database
from tkr_embed.security.errors import GatewayInputError, KeyNotFoundError
from tkr_embed.security.hashing import KeyHasher, display_parts, generate_api_key
from tkr_embed.security.keys import CreatedKey, KeyInfo, KeyLimits, utcnow
from tkr_embed.security.models import ApiKeyRow
from tkr_embed.security.permissions import Permission, parse_permissions

MAX_NAME_LENGTH = 200
MAX_EXPIRES_IN_DAYS = 3650
MAX_CACHED_KEYS = 10_000


@dataclass(frozen=True)
class StoredKey:
    """A key row as the authenticator needs it: the public facts plus the stored digest."""

    info: KeyInfo
    key_hash: str


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite drops the zone on the way back; every stored time is UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _row_to_info(row: ApiKeyRow) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        name=row.name,
        permissions=frozenset(Permission(name) for name in row.permissions.split(",") if name),
        display_prefix=row.display_prefix,
        last_four=row.last_four,
        created_at=_aware(row.created_at),
        expires_at=_aware(row.expires_at),
        revoked_at=_aware(row.revoked_at),
        last_used_at=_aware(row.last_used_at),
        limits=KeyLimits(
            burst=row.limit_burst,
            requests_per_minute=row.limit_requests_per_minute,
            requests_per_hour=row.limit_requests_per_hour,
            requests_per_day=row.limit_requests_per_day,
            tokens_per_minute=row.limit_tokens_per_minute,
        ),
    )


def _check_limits(limits: KeyLimits) -> None:
    for name in ("burst", "requests_per_minute", "requests_per_hour", "requests_per_day", "tokens_per_minute"):
        value = getattr(limits, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise GatewayInputError(f"limits.{name} must be a positive integer or null", f"limits.{name}")


class KeyStore:
    """API keys in the database. Secrets never enter it: `create` hashes, returns the key once, forgets it.

    With `lookup_cache_ttl_s > 0`, `find_by_digest` remembers found keys (never misses, so a key made
    by another process works at once) for that long, sparing a database round trip per request.
    `revoke` drops the key from this store's memory at once; other processes notice within the TTL.
    Expiry is unaffected: the authenticator checks `expires_at` on every request.
    """

    def __init__(
        self,
        db: Database,
        hasher: KeyHasher,
        clock: Callable[[], datetime] = utcnow,
        lookup_cache_ttl_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._clock = clock
        self._lookup_ttl_s = lookup_cache_ttl_s
        self._monotonic = monotonic
        self._found: OrderedDict[str, tuple[float, StoredKey]] = OrderedDict()  # digest -> (expires, key)

    async def create(
        self,
        name: str,
        permissions: Iterable[str] | str | None = None,
        expires_in_days: int | None = None,
        limits: KeyLimits | None = None,
    ) -> CreatedKey:
        """Create a key; raises GatewayInputError for a bad name, permission, expiry or limit."""
        name = (name or "").strip()
        if not name or len(name) > MAX_NAME_LENGTH:
            raise GatewayInputError(f"name must be 1 to {MAX_NAME_LENGTH} characters", "name")
        granted = parse_permissions(permissions)
        if expires_in_days is not None and (
            not isinstance(expires_in_days, int)
            or isinstance(expires_in_days, bool)
            or not 1 <= expires_in_days <= MAX_EXPIRES_IN_DAYS
        ):
            raise GatewayInputError(
                f"expires_in_days must be an integer from 1 to {MAX_EXPIRES_IN_DAYS}", "expires_in_days"
            )
        limits = limits or KeyLimits()
        _check_limits(limits)

        api_key = generate_api_key()
        display_prefix, last_four = display_parts(api_key)
        now = self._clock()
        row = ApiKeyRow(
            id="key_" + secrets.token_hex(8),
            name=name,
            key_hash=self._hasher.digest(api_key),
            display_prefix=display_prefix,
            last_four=last_four,
            permissions=",".join(sorted(p.value for p in granted)),
            created_at=now,
            expires_at=now + timedelta(days=expires_in_days) if expires_in_days is not None else None,
            limit_burst=limits.burst,
            limit_requests_per_minute=limits.requests_per_minute,
            limit_requests_per_hour=limits.requests_per_hour,
            limit_requests_per_day=limits.requests_per_day,
            limit_tokens_per_minute=limits.tokens_per_minute,
        )
        async with self._db.sessions() as session, session.begin():
            session.add(row)
        return CreatedKey(info=_row_to_info(row), api_key=api_key)

    async def list(self, include_revoked: bool = True) -> list[KeyInfo]:
        """Every key, oldest first (never a secret nor a digest)."""
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if not include_revoked:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        async with self._db.sessions() as session:
            rows = (await session.scalars(query)).all()
        return [_row_to_info(row) for row in rows]

    async def get(self, key_id: str) -> KeyInfo:
        """The key with this id; raises KeyNotFoundError."""
        async with self._db.sessions() as session:
            row = await session.get(ApiKeyRow, key_id)
        if row is None:
            raise KeyNotFoundError(key_id)
        return _row_to_info(row)

    async def revoke(self, key_id: str) -> KeyInfo:
        """Revoke a key (idempotent: the first revocation time is kept); raises KeyNotFoundError."""
        async with self._db.sessions() as session, session.begin():
            row = await session.get(ApiKeyRow, key_id)
            if row is None:
                raise KeyNotFoundError(key_id)
            if row.revoked_at is None:
                row.revoked_at = self._clock()
        self._forget(row.key_hash)
        return _row_to_info(row)

    async def find_by_digest(self, digest: str) -> StoredKey | None:
        if self._lookup_ttl_s > 0:
            cached = self._found.get(digest)
            if cached is not None and self._monotonic() < cached[0]:
                return cached[1]
        async with self._db.sessions() as session:
            row = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest))
        if row is None:
            self._forget(digest)
            return None
        stored = StoredKey(info=_row_to_info(row), key_hash=row.key_hash)
        if self._lookup_ttl_s > 0:
            self._found[digest] = (self._monotonic() + self._lookup_ttl_s, stored)
            self._found.move_to_end(digest)
            while len(self._found) > MAX_CACHED_KEYS:
                self._found.popitem(last=False)
        return stored

    def _forget(self, digest: str) -> None:
        self._found.pop(digest, None)
