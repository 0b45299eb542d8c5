"""Every gateway service built from the settings, started and closed together (what the app wires in)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from tkr_embed.cache.response_cache import ResponseCache
from tkr_embed.db import Database, resolve_database_url
from tkr_embed.logging import register_secret
from tkr_embed.metrics import ServerMetrics
from tkr_embed.security.audit import AuditLog
from tkr_embed.security.budgets import BudgetLedger
from tkr_embed.security.hashing import KeyHasher, load_server_secret
from tkr_embed.security.keys import Authenticator, KeyInfo
from tkr_embed.security.ratelimit import RateLimiter, RateLimits
from tkr_embed.security.store import KeyStore
from tkr_embed.security.usage import UsageRecorder
from tkr_embed.storage.responses import ResponseStore

if TYPE_CHECKING:
    from tkr_embed.config import Settings


@dataclass
class Gateway:
    """Keys, rate limits, usage, budgets, audit log, response cache, stored responses and metrics of one process.

    `limiter` is None when rate limiting is off and `cache` None when the response cache is off. `budgets` and
    `audit` are built from `db` and `usage` when not given (budgets then count without shared counters).
    """

    db: Database
    keys: KeyStore
    authenticator: Authenticator
    usage: UsageRecorder
    responses: ResponseStore
    metrics: ServerMetrics
    default_limits: RateLimits
    limiter: RateLimiter | None = None
    cache: ResponseCache[Any] | None = None
    budgets: BudgetLedger | None = None
    audit: AuditLog | None = None

    def __post_init__(self) -> None:
        if self.budgets is None:
            self.budgets = BudgetLedger(self.db, self.usage)
        if self.audit is None:
            self.audit = AuditLog(self.db)

    @classmethod
    def from_settings(cls, settings: Settings) -> Gateway:
        db = Database(resolve_database_url(settings.database_url))
        register_secret(settings.security.api_key)
        register_secret(settings.security.secret_key)
        hasher = KeyHasher(load_server_secret(settings.data_dir, settings.security.secret_key))
        keys = KeyStore(db, hasher, lookup_cache_ttl_s=settings.security.key_cache_ttl_s)
        rate = settings.rate_limit
        default_limits = RateLimits(
            burst=rate.burst,
            requests_per_minute=rate.requests_per_minute,
            requests_per_hour=rate.requests_per_hour,
            requests_per_day=rate.requests_per_day,
            tokens_per_minute=rate.tokens_per_minute,
        )
        usage = UsageRecorder(db)
        redis_url = rate.redis_url or settings.storage.redis_url
        return cls(
            db=db,
            keys=keys,
            authenticator=Authenticator(keys, hasher, master_key=settings.security.api_key),
            usage=usage,
            budgets=BudgetLedger(db, usage, Redis.from_url(redis_url) if redis_url else None),
            responses=ResponseStore(db, retention_days=settings.storage.responses_retention_days),
            metrics=ServerMetrics(),
            default_limits=default_limits,
            limiter=RateLimiter(
                rate.redis_url or settings.storage.redis_url or "memory://",
                max_connections=rate.redis_max_connections,
                pool_timeout_s=rate.redis_pool_timeout_s,
            )
            if rate.enabled
            else None,
            cache=ResponseCache(
                settings.cache.max_size,
                settings.cache.ttl_seconds,
                max_bytes=settings.cache.max_bytes,
                max_entry_bytes=settings.cache.max_entry_bytes,
            )
            if settings.cache.enabled
            else None,
        )

    def limits_for(self, key: KeyInfo) -> RateLimits:
        """The global limits with this key's overrides."""
        return self.default_limits.with_overrides(key.limits)

    async def start(self) -> None:
        await self.db.start()
        await self.usage.start()
        await self.responses.start()

    async def close(self) -> None:
        await self.usage.close()
        await self.responses.close()
        if self.limiter is not None:
            await self.limiter.close()
        await self.budgets.close()
        await self.db.close()
