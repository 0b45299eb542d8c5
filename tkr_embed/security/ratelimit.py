"""Per-key rate limits: a burst token bucket, requests per minute / hour / day, tokens per minute.

Windows are counted by the `limits` library (memory for one process, Redis so that replicas share one
limit); the burst bucket is ours (`token_bucket.py`). A check first *tests* every window, so a refused
request consumes nothing, then takes from the bucket and *hits* the windows. The hit is atomic in the
storage, so concurrent checks (one process or many) admit exactly the limit; the rare request that
passes the test but loses the race at the hit may have spent a bucket token. The decision carries the
values of the `Retry-After` and `x-ratelimit-*` headers.

A request is charged by what it starts, not once: every engine sequence it starts (prompts x n) counts as
one request in the request windows and the burst bucket, and the tokens it may use (its prompt tokens plus
max_tokens for each sequence) count in tokens per minute. `check` runs at the door, before the body is read,
and counts one sequence; `charge` adds the rest once the request is prepared and its cost is known. A cost
larger than a whole window is admitted only into an empty window, and then fills it: a request that can
never fit is slowed to the window's pace rather than refused forever.

With Redis, connections come from a blocking pool: when every connection is busy a check waits for one
(up to `pool_timeout_s`) instead of failing, so a burst of requests is never mistaken for "Redis is down"
(which `rate_limit.fail_open` would admit unchecked). A check that still finds no connection is refused
as `limiter_busy`, never admitted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, fields, replace
from typing import Literal

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerHour, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.aio.strategies import (
    RateLimiter as WindowLimiter,
)
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tkr_embed.security.keys import KeyLimits
from tkr_embed.security.token_bucket import MemoryTokenBucketStore, RedisTokenBucketStore, TokenBucketStore

Strategy = Literal["fixed-window", "moving-window", "sliding-window-counter"]
_STRATEGIES: dict[str, type[WindowLimiter]] = {
    "fixed-window": FixedWindowRateLimiter,
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}
_NAMESPACE = "tkr"
# A Redis command takes well under a millisecond; a store that does not answer within this fails the
# check (then rate_limit.fail_open decides) instead of holding the request.
REDIS_TIMEOUT_S = 1.0
REDIS_MAX_CONNECTIONS = 100
REDIS_POOL_TIMEOUT_S = 2.0
LIMITER_BUSY = "limiter_busy"
LIMITER_BUSY_RETRY_S = 1.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateLimits:
    """Limits of one key; None disables that limit. Defaults are the original spec's: 10 / 60 / 1000 / 10000."""

    burst: int | None = 10
    requests_per_minute: int | None = 60
    requests_per_hour: int | None = 1000
    requests_per_day: int | None = 10000
    tokens_per_minute: int | None = None
    burst_refill_per_s: float | None = None  # None: the per-minute rate (60 per minute when that is off)

    def with_overrides(self, overrides: KeyLimits | None) -> RateLimits:
        """These global limits with a key's non-null overrides applied."""
        if overrides is None:
            return self
        changes = {
            f.name: getattr(overrides, f.name) for f in fields(KeyLimits) if getattr(overrides, f.name) is not None
        }
        return replace(self, **changes)

    @property
    def bucket_refill_per_s(self) -> float:
        # By default the bucket refills at the per-minute pace: a client may burst, then keeps that pace.
        if self.burst_refill_per_s is not None:
            return self.burst_refill_per_s
        return (self.requests_per_minute or 60) / 60.0


def format_reset(seconds: float) -> str:
    """A reset duration as OpenAI writes it: "20ms", "1s", "6m0s", "1h0m0s"."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass(frozen=True)
class RateDecision:
    """Whether a request may run, and what to tell the client about its limits.

    The request fields describe the binding request limit (the one with the fewest requests left;
    the burst bucket when it refused). Token fields are None when the key has no token limit.
    """

    allowed: bool
    retry_after_s: float = 0.0
    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None
    limited_by: str | None = None  # "burst", "requests_per_minute", ..., "tokens_per_minute", "limiter_busy"

    @property
    def limiter_busy(self) -> bool:
        """Refused because no counter-store connection freed up in time (server load, not the key's use)."""
        return self.limited_by == LIMITER_BUSY

    def headers(self) -> dict[str, str]:
        """`x-ratelimit-*` headers, plus `retry-after` (whole seconds, at least 1) when refused."""
        headers: dict[str, str] = {}
        if self.limit_requests is not None:
            headers["x-ratelimit-limit-requests"] = str(self.limit_requests)
            headers["x-ratelimit-remaining-requests"] = str(self.remaining_requests)
            headers["x-ratelimit-reset-requests"] = format_reset(self.reset_requests_s or 0.0)
        if self.limit_tokens is not None:
            headers["x-ratelimit-limit-tokens"] = str(self.limit_tokens)
            headers["x-ratelimit-remaining-tokens"] = str(self.remaining_tokens)
            headers["x-ratelimit-reset-tokens"] = format_reset(self.reset_tokens_s or 0.0)
        if not self.allowed:
            headers["retry-after"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


@dataclass(frozen=True)
class _Window:
    name: str
    item: RateLimitItem
    unit: str  # "requests" or "tokens"


class LimiterBusy(Exception):
    """Every connection of the pool stayed busy for the whole wait: the store is up but saturated."""


class _WaitingPool(BlockingConnectionPool):
    """A Redis pool that waits for a free connection; running out of time raises LimiterBusy, which the
    limiter answers with a refusal, never with the fail-open path kept for a store that is down."""

    async def get_connection(self, *args: object, **kwargs: object):  # type: ignore[override]
        try:
            return await super().get_connection(*args, **kwargs)
        except RedisConnectionError as error:
            if isinstance(error.__cause__, TimeoutError):
                raise LimiterBusy("no rate-limit store connection became free in time") from error
            raise


def _windows(limits: RateLimits) -> list[_Window]:
    windows = []
    for name, item_type in (
        ("requests_per_minute", RateLimitItemPerMinute),
        ("requests_per_hour", RateLimitItemPerHour),
        ("requests_per_day", RateLimitItemPerDay),
    ):
        amount = getattr(limits, name)
        if amount is not None:
            windows.append(_Window(name, item_type(amount, namespace=_NAMESPACE), "requests"))
    return windows


class RateLimiter:
    """Rate limits of every key, in memory (`memory://`) or shared through Redis (`redis://...`)."""

    def __init__(
        self,
        storage_url: str = "memory://",
        strategy: Strategy = "fixed-window",
        key_prefix: str = "tkr",
        bucket_store: TokenBucketStore | None = None,
        max_connections: int = REDIS_MAX_CONNECTIONS,
        pool_timeout_s: float = REDIS_POOL_TIMEOUT_S,
    ) -> None:
        if strategy not in _STRATEGIES:
            raise ValueError(f"unknown rate-limit strategy {strategy!r}; choose one of {sorted(_STRATEGIES)}")
        self._storage: Storage
        self._redis: Redis | None = None
        if storage_url.startswith("memory://"):
            self._storage = MemoryStorage()
            self._buckets = bucket_store or MemoryTokenBucketStore()
        elif storage_url.startswith(("redis://", "rediss://", "unix://")):
            # One connection pool for the windows and the bucket, closed by `close()`.
            pool = _WaitingPool.from_url(
                storage_url,
                max_connections=max_connections,
                timeout=pool_timeout_s,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
            )
            self._redis = Redis(connection_pool=pool)
            self._storage = RedisStorage(
                "async+" + storage_url,
                implementation="redispy",
                key_prefix=key_prefix,
                connection_pool=self._redis.connection_pool,
            )
            self._buckets = bucket_store or RedisTokenBucketStore(key_prefix=key_prefix, client=self._redis)
        else:
            raise ValueError(f"rate-limit storage must be memory:// or redis://..., not {storage_url!r}")
        self._windows = _STRATEGIES[strategy](self._storage)
        self._rejections_key = f"{key_prefix}:rejections"
        self._local_rejections: dict[str, int] = {}
        self.rejections = 0  # refused by this process

    async def check(self, key_id: str, limits: RateLimits, cost_tokens: int = 0) -> RateDecision:
        """Admit or refuse one request of `key_id` at the door: it counts as one sequence, and may use
        `cost_tokens` tokens when they are already known (an exhausted token window refuses it either way)."""
        return await self._admit(key_id, limits, sequences=1, counted=0, tokens=cost_tokens)

    async def charge(self, key_id: str, limits: RateLimits, *, sequences: int, tokens: int) -> RateDecision:
        """The rest of a prepared request's cost, once known: all `sequences` it starts (the one `check`
        counted is not counted again) and the `tokens` it may use (prompt tokens + max_tokens per sequence).
        A refusal consumes nothing."""
        return await self._admit(key_id, limits, sequences=max(1, sequences), counted=1, tokens=tokens, door=False)

    async def _admit(
        self, key_id: str, limits: RateLimits, *, sequences: int, counted: int, tokens: int, door: bool = True
    ) -> RateDecision:
        """Charge a request of `sequences` sequences, `counted` of which an earlier call charged already."""
        try:
            return await self._admit_unguarded(key_id, limits, sequences, counted, max(0, tokens), door)
        except LimiterBusy:
            logger.warning("rate-limit store pool exhausted: request refused as %s", LIMITER_BUSY)
            # Counted here only: counting in Redis would wait for the same exhausted pool.
            self.rejections += 1
            self._local_rejections[key_id] = self._local_rejections.get(key_id, 0) + 1
            return RateDecision(allowed=False, retry_after_s=LIMITER_BUSY_RETRY_S, limited_by=LIMITER_BUSY)

    async def _admit_unguarded(
        self, key_id: str, limits: RateLimits, sequences: int, counted: int, tokens: int, door: bool
    ) -> RateDecision:
        windows = _windows(limits)
        token_window = (
            _Window(
                "tokens_per_minute", RateLimitItemPerMinute(limits.tokens_per_minute, namespace=_NAMESPACE), "tokens"
            )
            if limits.tokens_per_minute is not None
            else None
        )
        checked = windows + ([token_window] if token_window is not None else [])
        # What each window is charged now: the request's cost capped at the window's amount (see above), less
        # what the door already charged.
        costs = [max(0, min(sequences, w.item.amount) - counted) for w in windows]
        if token_window is not None:
            costs.append(min(tokens, token_window.item.amount))
        # At the door an exhausted token window refuses even a request whose tokens are not known yet.
        test_costs = list(costs)
        if token_window is not None and door:
            test_costs[-1] = max(1, test_costs[-1])

        # 1. test: a refused request consumes nothing.
        tests = [
            self._windows.test(w.item, key_id, w.unit, cost=cost)
            for w, cost in zip(checked, test_costs, strict=True)
            if cost > 0
        ]
        tested = [w for w, cost in zip(checked, test_costs, strict=True) if cost > 0]
        for window, ok in zip(tested, await asyncio.gather(*tests), strict=True):
            if not ok:
                return await self._refuse_window(key_id, windows, token_window, window)

        # 2. burst bucket (atomic take).
        bucket_cost = max(0, min(sequences, limits.burst) - counted) if limits.burst is not None else 0
        if limits.burst is not None and bucket_cost > 0:
            bucket = await self._buckets.take(
                f"{key_id}:{limits.burst}", limits.burst, limits.bucket_refill_per_s, cost=bucket_cost
            )
            if not bucket.allowed:
                await self._count_rejection(key_id)
                token_stats = await self._token_stats(key_id, token_window)
                return RateDecision(
                    allowed=False,
                    retry_after_s=bucket.retry_after_s,
                    limit_requests=limits.burst,
                    remaining_requests=0,
                    reset_requests_s=bucket.retry_after_s,
                    limited_by="burst",
                    **token_stats,
                )

        # 3. hit: another replica may have taken the last slot since the test.
        charged = [(w, cost) for w, cost in zip(checked, costs, strict=True) if cost > 0]
        hits = [self._windows.hit(w.item, key_id, w.unit, cost=cost) for w, cost in charged]
        for (window, _), ok in zip(charged, await asyncio.gather(*hits), strict=True):
            if not ok:
                return await self._refuse_window(key_id, windows, token_window, window)
        return await self._decision(key_id, windows, token_window, allowed=True)

    async def record_tokens(self, key_id: str, limits: RateLimits, tokens: int) -> None:
        """Charge tokens learnt after the fact (e.g. the true completion length) to the token window."""
        if limits.tokens_per_minute is not None and tokens > 0:
            item = RateLimitItemPerMinute(limits.tokens_per_minute, namespace=_NAMESPACE)
            await self._windows.hit(item, key_id, "tokens", cost=tokens)

    async def rejections_by_key(self) -> dict[str, int]:
        """Refusals per key id: shared by every replica on the same Redis, else (or while Redis does not
        answer) this process's."""
        if self._redis is None:
            return dict(self._local_rejections)
        try:
            counts = await self._redis.hgetall(self._rejections_key)
        except Exception:
            logger.warning("redis unavailable: reporting this process's rate-limit rejections only", exc_info=True)
            return dict(self._local_rejections)
        return {key.decode(): int(value) for key, value in counts.items()}

    async def close(self) -> None:
        await self._buckets.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def _refuse_window(
        self, key_id: str, windows: list[_Window], token_window: _Window | None, refused: _Window
    ) -> RateDecision:
        await self._count_rejection(key_id)
        return await self._decision(key_id, windows, token_window, allowed=False, refused=refused)

    async def _count_rejection(self, key_id: str) -> None:
        # Bounded: key ids come from authenticated keys. A failed count must not turn a refusal into
        # a store error (which fail-open would admit), so it is only logged.
        self.rejections += 1
        self._local_rejections[key_id] = self._local_rejections.get(key_id, 0) + 1
        if self._redis is not None:
            try:
                await self._redis.hincrby(self._rejections_key, key_id, 1)
            except Exception:
                logger.warning("could not count a rate-limit rejection in redis", exc_info=True)

    async def _stats(self, key_id: str, window: _Window) -> tuple[int, float]:
        stats = await self._windows.get_window_stats(window.item, key_id, window.unit)
        return stats.remaining, max(0.0, stats.reset_time - time.time())

    async def _token_stats(self, key_id: str, token_window: _Window | None) -> dict[str, float | int | None]:
        if token_window is None:
            return {}
        remaining, reset_s = await self._stats(key_id, token_window)
        return {"limit_tokens": token_window.item.amount, "remaining_tokens": remaining, "reset_tokens_s": reset_s}

    async def _decision(
        self,
        key_id: str,
        windows: list[_Window],
        token_window: _Window | None,
        allowed: bool,
        refused: _Window | None = None,
    ) -> RateDecision:
        stats = await asyncio.gather(*(self._stats(key_id, w) for w in windows))
        request_fields: dict[str, float | int | None] = {}
        if windows:
            # The binding request window: fewest left, then the shortest (listed first).
            index = min(range(len(windows)), key=lambda i: (stats[i][0], i))
            if refused is not None and refused.unit == "requests":
                index = windows.index(refused)
            remaining, reset_s = stats[index]
            request_fields = {
                "limit_requests": windows[index].item.amount,
                "remaining_requests": 0 if refused is windows[index] else remaining,
                "reset_requests_s": reset_s,
            }
        token_fields = await self._token_stats(key_id, token_window)
        retry_after_s = 0.0
        if refused is not None:
            retry_after_s = (
                float(token_fields["reset_tokens_s"] or 0.0)
                if refused.unit == "tokens"
                else float(request_fields["reset_requests_s"] or 0.0)
            )
        return RateDecision(
            allowed=allowed,
            retry_after_s=retry_after_s,
            limited_by=refused.name if refused is not None else None,
            **request_fields,
            **token_fields,
        )
