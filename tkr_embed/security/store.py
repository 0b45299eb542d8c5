"""Repository of API keys over SQLAlchemy (async): create, list, get, update, rotate, revoke, find by digest."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from tkr_embed.db import Database
from tkr_embed.security.errors import GatewayInputError, KeyNotFoundError, KeyRevokedError
from tkr_embed.security.hashing import KeyHasher, display_parts, generate_api_key
from tkr_embed.security.keys import CreatedKey, KeyInfo, KeyLimits, utcnow
from tkr_embed.security.models import ApiKeyRow
from tkr_embed.security.permissions import Permission, parse_permissions
from tkr_embed.security.policy import KeyBudgets, ReasoningPolicy

MAX_NAME_LENGTH = 200
MAX_EXPIRES_IN_DAYS = 3650
MAX_CACHED_KEYS = 10_000
MAX_GRACE_PERIOD_S = 30 * 24 * 3600


@dataclass(frozen=True)
class StoredKey:
    """A key row as the authenticator needs it: the public facts plus the stored digest."""

    info: KeyInfo
    key_hash: str  # the digest that matched: the current secret's, or the previous one's during its grace period
    accepted_until: datetime | None = None  # set when the previous secret matched: the end of its grace period


@dataclass(frozen=True)
class KeyUpdate:
    """What PATCH changes; None leaves a field as it is (an empty KeyLimits / KeyBudgets / policy clears it)."""

    name: str | None = None
    permissions: list[str] | None = None
    limits: KeyLimits | None = None
    budgets: KeyBudgets | None = None
    reasoning: ReasoningPolicy | None = None


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite drops the zone on the way back; every stored time is UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


async def _live_row_for_update(session: AsyncSession, key_id: str) -> ApiKeyRow:
    """The key's row, locked for this transaction; an unknown or revoked key raises."""
    row = await session.get(ApiKeyRow, key_id, with_for_update=True)
    if row is None:
        raise KeyNotFoundError(key_id)
    if row.revoked_at is not None:
        raise KeyRevokedError(key_id)
    return row


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
        budgets=KeyBudgets.from_json(row.budgets),
        reasoning=ReasoningPolicy.from_json(row.reasoning_policy),
        previous_hint=f"{row.previous_display_prefix}...{row.previous_last_four}" if row.previous_key_hash else None,
        previous_expires_at=_aware(row.previous_expires_at) if row.previous_key_hash else None,
    )


def _check_name(name: str | None) -> str:
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise GatewayInputError(f"name must be 1 to {MAX_NAME_LENGTH} characters", "name")
    return name


def _apply_limits(row: ApiKeyRow, limits: KeyLimits) -> None:
    row.limit_burst = limits.burst
    row.limit_requests_per_minute = limits.requests_per_minute
    row.limit_requests_per_hour = limits.requests_per_hour
    row.limit_requests_per_day = limits.requests_per_day
    row.limit_tokens_per_minute = limits.tokens_per_minute


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
        budgets: KeyBudgets | None = None,
        reasoning: ReasoningPolicy | None = None,
    ) -> CreatedKey:
        """Create a key; raises GatewayInputError for a bad name, permission, expiry or limit."""
        name = _check_name(name)
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
            budgets=(budgets or KeyBudgets()).to_json(),
            reasoning_policy=(reasoning or ReasoningPolicy()).to_json(),
        )
        async with self._db.sessions() as session, session.begin():
            session.add(row)
        return CreatedKey(info=_row_to_info(row), api_key=api_key)

    async def update(self, key_id: str, change: KeyUpdate) -> tuple[KeyInfo, KeyInfo]:
        """Apply `change`; returns the key before and after. Raises KeyNotFoundError, KeyRevokedError,
        GatewayInputError."""
        name = _check_name(change.name) if change.name is not None else None
        granted = parse_permissions(change.permissions) if change.permissions is not None else None
        if change.limits is not None:
            _check_limits(change.limits)
        async with self._db.sessions() as session, session.begin():
            row = await _live_row_for_update(session, key_id)
            before = _row_to_info(row)
            if name is not None:
                row.name = name
            if granted is not None:
                row.permissions = ",".join(sorted(p.value for p in granted))
            if change.limits is not None:
                _apply_limits(row, change.limits)
            if change.budgets is not None:
                row.budgets = change.budgets.to_json()
            if change.reasoning is not None:
                row.reasoning_policy = change.reasoning.to_json()
            digests = (row.key_hash, row.previous_key_hash)
        for digest in digests:  # this process sees the change at once; others within the lookup TTL
            self._forget(digest)
        return before, _row_to_info(row)

    async def rotate(self, key_id: str, grace_period_s: int) -> tuple[KeyInfo, CreatedKey]:
        """A new secret for the key; the current one keeps working for `grace_period_s` (0: stops at once).

        Returns the key before and the new secret. A previous secret still in its grace period stops now.
        """
        if not isinstance(grace_period_s, int) or isinstance(grace_period_s, bool):
            raise GatewayInputError("grace_period_s must be an integer", "grace_period_s")
        if not 0 <= grace_period_s <= MAX_GRACE_PERIOD_S:
            raise GatewayInputError(f"grace_period_s must be from 0 to {MAX_GRACE_PERIOD_S}", "grace_period_s")
        api_key = generate_api_key()
        display_prefix, last_four = display_parts(api_key)
        now = self._clock()
        async with self._db.sessions() as session, session.begin():
            row = await _live_row_for_update(session, key_id)
            before = _row_to_info(row)
            old_digests = (row.key_hash, row.previous_key_hash)
            if grace_period_s > 0:
                row.previous_key_hash = row.key_hash
                row.previous_display_prefix, row.previous_last_four = row.display_prefix, row.last_four
                row.previous_expires_at = now + timedelta(seconds=grace_period_s)
            else:
                row.previous_key_hash = row.previous_display_prefix = row.previous_last_four = None
                row.previous_expires_at = None
            row.key_hash = self._hasher.digest(api_key)
            row.display_prefix, row.last_four = display_prefix, last_four
        for digest in old_digests:
            self._forget(digest)
        return before, CreatedKey(info=_row_to_info(row), api_key=api_key)

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
        self._forget(row.previous_key_hash)
        return _row_to_info(row)

    async def find_by_digest(self, digest: str) -> StoredKey | None:
        if self._lookup_ttl_s > 0:
            cached = self._found.get(digest)
            if cached is not None and self._monotonic() < cached[0]:
                return cached[1]
        async with self._db.sessions() as session:
            row = await session.scalar(
                select(ApiKeyRow).where(or_(ApiKeyRow.key_hash == digest, ApiKeyRow.previous_key_hash == digest))
            )
        if row is None:
            self._forget(digest)
            return None
        if row.key_hash == digest:
            stored = StoredKey(info=_row_to_info(row), key_hash=row.key_hash)
        else:
            # The previous secret: accepted until its grace period ends (no expiry recorded: not at all).
            ends = _aware(row.previous_expires_at) or datetime.min.replace(tzinfo=UTC)
            stored = StoredKey(info=_row_to_info(row), key_hash=digest, accepted_until=ends)
        if self._lookup_ttl_s > 0:
            self._found[digest] = (self._monotonic() + self._lookup_ttl_s, stored)
            self._found.move_to_end(digest)
            while len(self._found) > MAX_CACHED_KEYS:
                self._found.popitem(last=False)
        return stored

    def _forget(self, digest: str | None) -> None:
        if digest is not None:
            self._found.pop(digest, None)
