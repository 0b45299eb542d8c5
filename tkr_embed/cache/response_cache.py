"""Response cache for deterministic requests: LRU with a TTL, bounded in bytes and in entries, scoped per caller.

An entry's size is the length of its value serialized as JSON (what the client receives), measured once when
it is stored. The least recently used entries are evicted until the stored bytes fit `max_bytes`; a value
larger than `max_entry_bytes` (by default a sixteenth of the budget) is never stored, so one huge answer
(a long completion with logprobs runs to megabytes) cannot flush the whole cache.

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
from typing import Any, Generic, TypeVar

from tkr_embed.engine.sampling_params import SamplingParams

Value = TypeVar("Value")

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
ENTRY_FRACTION = 16  # the largest entry stored: max_bytes // ENTRY_FRACTION


def serialized_size(value: Any) -> int:
    """Bytes of `value` as JSON: pydantic models as they are sent, lists and dataclasses field by field."""
    if hasattr(value, "model_dump_json"):
        return len(value.model_dump_json().encode("utf-8"))
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, str):
        return len(value.encode("utf-8", errors="replace"))
    if isinstance(value, (list, tuple)):
        return sum(serialized_size(item) for item in value)
    if isinstance(value, dict):
        return sum(serialized_size(key) + serialized_size(item) for key, item in value.items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(serialized_size(getattr(value, f.name)) for f in dataclasses.fields(value))
    return len(repr(value))


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
    bytes: int = 0
    max_bytes: int = DEFAULT_MAX_BYTES
    too_large: int = 0  # values refused for being larger than max_entry_bytes

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class ResponseCache(Generic[Value]):
    """LRU + TTL map from `cache_key(...)` digests to responses. Safe from threads and from asyncio tasks.

    A lookup is O(1) under one lock and never awaits, so a hit costs microseconds; storing also measures the
    value (`size_of`, the JSON length by default), outside the lock.
    """

    def __init__(
        self,
        max_size: int = 1000,
        ttl_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_entry_bytes: int | None = None,
        size_of: Callable[[Value], int] = serialized_size,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.max_size = max_size
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(
            max_bytes, max_entry_bytes if max_entry_bytes is not None else max_bytes // ENTRY_FRACTION
        )
        self._size_of = size_of
        self._clock = clock
        # key -> (expires_at, value, size in bytes)
        self._entries: OrderedDict[str, tuple[float, Value, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expirations = 0
        self._too_large = 0

    def get(self, key: str) -> Value | None:
        """The cached value (and mark it recently used), or None on a miss or an expired entry."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._misses += 1
                return None
            expires_at, value, _ = entry
            if self._clock() >= expires_at:
                self._remove(key)
                self._expirations += 1
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return value

    def put(self, key: str, value: Value) -> bool:
        """Store a value for `ttl_seconds`, evicting the least recently used entries until both `max_size` and
        `max_bytes` hold. A value larger than `max_entry_bytes` is not stored (False)."""
        size = self._size_of(value)
        with self._lock:
            if size > self.max_entry_bytes:
                self._too_large += 1
                self._remove(key)  # a stale smaller answer under the same key would be served otherwise
                return False
            self._remove(key)
            self._entries[key] = (self._clock() + self.ttl_seconds, value, size)
            self._bytes += size
            while len(self._entries) > self.max_size or self._bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._remove(oldest)
                self._evictions += 1
            return True

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[2]

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits,
                self._misses,
                len(self._entries),
                self.max_size,
                self._evictions,
                self._expirations,
                bytes=self._bytes,
                max_bytes=self.max_bytes,
                too_large=self._too_large,
            )
