"""Response cache for deterministic requests: LRU with a TTL and a size bound, scoped per caller.

An entry's key is a SHA-256 digest of everything that decides the response: the endpoint, the model,
the stream flag, the prompt token ids, every sampling parameter and the caller's key scope. Two
tenants asking the same thing get two entries, never each other's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from tkr_embed.engine.sampling_params import SamplingParams

Value = TypeVar("Value")


def is_cacheable(params: SamplingParams) -> bool:
    """Only deterministic requests are cached: greedy (temperature 0) or seeded."""
    return params.is_deterministic


def cache_key(
    *,
    scope: str,
    endpoint: str,
    prompt_token_ids: Sequence[int],
    params: SamplingParams,
    stream: bool,
    model: str = "",
    extra: Mapping[str, object] | None = None,
) -> str:
    """Digest of everything that shapes a response. `scope` is the caller's key id (or another tenant id);
    `extra` holds request fields outside the sampling parameters that change the answer (JSON values)."""
    if not scope:
        raise ValueError("a cache key needs the caller's scope; an empty scope would share entries")
    material = {
        "scope": scope,
        "endpoint": endpoint,
        "model": model,
        "stream": bool(stream),
        "prompt_token_ids": [int(token) for token in prompt_token_ids],
        "params": dataclasses.asdict(params),
        "extra": dict(extra or {}),
    }
    encoded = json.dumps(material, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    size: int
    max_size: int
    evictions: int
    expirations: int

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class ResponseCache(Generic[Value]):
    """LRU + TTL map from `cache_key(...)` digests to responses. Safe from threads and from asyncio tasks.

    Operations are O(1) under one lock and never await, so a hit costs microseconds.
    """

    def __init__(
        self, max_size: int = 1000, ttl_seconds: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self.max_size = max_size
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Value]] = OrderedDict()  # key -> (expires_at, value)
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expirations = 0

    def get(self, key: str) -> Value | None:
        """The cached value (and mark it recently used), or None on a miss or an expired entry."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._misses += 1
                return None
            expires_at, value = entry
            if self._clock() >= expires_at:
                del self._entries[key]
                self._expirations += 1
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return value

    def put(self, key: str, value: Value) -> None:
        """Store a value for `ttl_seconds`, evicting the least recently used entries beyond `max_size`."""
        with self._lock:
            self._entries[key] = (self._clock() + self.ttl_seconds, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
                self._evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits, self._misses, len(self._entries), self.max_size, self._evictions, self._expirations
            )
