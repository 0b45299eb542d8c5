"""Token buckets for burst limits: in process memory, or in Redis (one Lua script, atomic) for replicas."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis


@dataclass(frozen=True)
class BucketResult:
    allowed: bool
    tokens_left: float  # after this take (or, when refused, what the bucket holds now)
    retry_after_s: float  # 0 when allowed: else the wait until `cost` tokens are back


class TokenBucketStore(ABC):
    """A named set of buckets, each holding at most `capacity` tokens and refilled at `refill_per_s`.

    Invariant: `take` either removes `cost` tokens atomically or removes none.
    """

    @abstractmethod
    async def take(self, name: str, capacity: int, refill_per_s: float, cost: int = 1) -> BucketResult:
        """Remove `cost` tokens from bucket `name` (a new bucket starts full) if it holds that many."""

    async def close(self) -> None:
        """Release connections (nothing to do in memory)."""


def _refill(tokens: float, elapsed_s: float, capacity: int, refill_per_s: float) -> float:
    return min(float(capacity), tokens + max(0.0, elapsed_s) * refill_per_s)


class MemoryTokenBucketStore(TokenBucketStore):
    """Buckets of one process. Thread-safe; `clock` (seconds, monotonic) is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, updated_at)

    async def take(self, name: str, capacity: int, refill_per_s: float, cost: int = 1) -> BucketResult:
        with self._lock:
            now = self._clock()
            tokens, updated_at = self._buckets.get(name, (float(capacity), now))
            tokens = _refill(tokens, now - updated_at, capacity, refill_per_s)
            if tokens >= cost:
                tokens -= cost
                result = BucketResult(True, tokens, 0.0)
            else:
                result = BucketResult(False, tokens, (cost - tokens) / refill_per_s)
            self._buckets[name] = (tokens, now)
            return result


# KEYS[1]: bucket; ARGV: capacity, refill per second, cost. Uses the server clock so that every
# replica sees the same time; floats travel as strings (Lua numbers would be truncated to integers).
_TAKE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = capacity
  updated = now
end
tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {allowed, tostring(tokens), tostring(wait)}
"""


class RedisTokenBucketStore(TokenBucketStore):
    """Buckets shared by every process that uses the same Redis and `key_prefix`.

    Pass `client` to share a connection pool; a store that builds its own client closes it.
    """

    def __init__(self, url: str | None = None, key_prefix: str = "tkr", client: Redis | None = None) -> None:
        if client is None:
            if url is None:
                raise ValueError("RedisTokenBucketStore needs a URL or a client")
            client = Redis.from_url(url)
            self._owns_client = True
        else:
            self._owns_client = False
        self._redis = client
        self._key_prefix = key_prefix
        self._take = self._redis.register_script(_TAKE_SCRIPT)

    async def take(self, name: str, capacity: int, refill_per_s: float, cost: int = 1) -> BucketResult:
        allowed, tokens, wait = await self._take(
            keys=[f"{self._key_prefix}:bucket:{name}"], args=[capacity, repr(float(refill_per_s)), cost]
        )
        return BucketResult(bool(int(allowed)), float(tokens), float(wait))

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()
