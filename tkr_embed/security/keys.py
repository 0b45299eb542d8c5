"""What a key is to the rest of the server (KeyInfo) and how a presented key is authenticated."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tkr_embed.security.hashing import KeyHasher, constant_time_equals, looks_like_api_key
from tkr_embed.security.permissions import ALL_PERMISSIONS, Permission, grants
from tkr_embed.security.policy import KeyBudgets, ReasoningPolicy

if TYPE_CHECKING:
    from tkr_embed.security.store import KeyStore

MASTER_KEY_ID = "master"
MASTER_KEY_ENV = "GENERATION_API_KEY"

logger = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class KeyLimits:
    """Per-key overrides of the global rate limits; None means "use the global value"."""

    burst: int | None = None
    requests_per_minute: int | None = None
    requests_per_hour: int | None = None
    requests_per_day: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True)
class KeyInfo:
    """An authenticated caller. Carries no secret: safe to log, list and return from admin routes."""

    id: str
    name: str
    permissions: frozenset[Permission]
    display_prefix: str = ""
    last_four: str = ""
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    limits: KeyLimits = field(default_factory=KeyLimits)
    budgets: KeyBudgets = field(default_factory=KeyBudgets)
    reasoning: ReasoningPolicy = field(default_factory=ReasoningPolicy)
    previous_hint: str | None = None  # the secret replaced by the last rotation, while it is still accepted
    previous_expires_at: datetime | None = None

    @property
    def is_master(self) -> bool:
        return self.id == MASTER_KEY_ID

    @property
    def is_admin(self) -> bool:
        return Permission.ADMIN in self.permissions

    @property
    def hint(self) -> str:
        """How the key is shown: its first eight and last four characters, never the secret."""
        return f"{self.display_prefix}...{self.last_four}"

    @property
    def permission_names(self) -> list[str]:
        return sorted(p.value for p in self.permissions)

    def allows(self, permission: Permission) -> bool:
        return grants(self.permissions, permission)

    def allows_all(self, permissions: frozenset[Permission]) -> bool:
        return all(self.allows(permission) for permission in permissions)

    def is_active(self, now: datetime) -> bool:
        """Neither revoked nor expired at `now`."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


MASTER_KEY_INFO = KeyInfo(id=MASTER_KEY_ID, name="master", permissions=ALL_PERMISSIONS)


@dataclass(frozen=True)
class CreatedKey:
    """The result of creating a key: the only moment the secret exists outside the caller's hands."""

    info: KeyInfo
    api_key: str


class Authenticator:
    """Turns a presented key into a KeyInfo, or None for anything that is not an active key.

    The master key (GENERATION_API_KEY) is compared in constant time and is an admin KeyInfo with
    id "master". Other keys are looked up by their HMAC digest and checked again with
    `hmac.compare_digest`; revoked and expired keys are refused. A stored digest presented as a key
    authenticates nothing (its own digest differs).
    """

    def __init__(
        self,
        store: KeyStore,
        hasher: KeyHasher,
        master_key: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._master_key = master_key or None
        self._clock = clock

    async def authenticate(self, raw_key: str | None) -> KeyInfo | None:
        if not raw_key:
            return None
        if self._master_key is not None and constant_time_equals(raw_key, self._master_key):
            return MASTER_KEY_INFO
        if not looks_like_api_key(raw_key):
            return None
        digest = self._hasher.digest(raw_key)
        stored = await self._store.find_by_digest(digest)
        if stored is None or not self._hasher.matches(raw_key, stored.key_hash):
            return None
        now = self._clock()
        if not stored.info.is_active(now):
            logger.info("refused an inactive API key", extra={"key_id": stored.info.id})
            return None
        if stored.accepted_until is not None and now >= stored.accepted_until:
            logger.info("refused a rotated-out API key secret", extra={"key_id": stored.info.id})
            return None
        return stored.info
