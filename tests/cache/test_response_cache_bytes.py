"""The response cache's byte bound: LRU eviction by stored bytes, oversized values refused, the count kept."""

from __future__ import annotations

import pytest

from tkr_embed.cache.response_cache import ResponseCache, serialized_size
from tkr_embed.protocol.openai_completions import CompletionChoice, CompletionResponse


def test_least_recently_used_values_are_evicted_to_fit_the_bytes() -> None:
    cache: ResponseCache[str] = ResponseCache(max_size=100, max_bytes=1000, max_entry_bytes=400)
    for name in "abc":
        assert cache.put(name, name * 300)
    assert cache.bytes == 900 and len(cache) == 3
    assert cache.get("a") is not None  # "a" is now the most recent, "b" the least
    assert cache.put("d", "d" * 300)
    assert cache.get("b") is None and cache.get("a") is not None
    assert cache.bytes == 900 and cache.stats().evictions == 1


def test_a_value_over_the_entry_bound_is_not_stored_and_replaces_nothing_stale() -> None:
    cache: ResponseCache[str] = ResponseCache(max_bytes=16 * 1024)  # entries up to a sixteenth: 1 KiB
    assert cache.max_entry_bytes == 1024
    assert cache.put("k", "small")
    assert not cache.put("k", "x" * 2000)
    assert cache.get("k") is None and cache.bytes == 0 and cache.stats().too_large == 1


def test_size_is_the_json_a_client_receives() -> None:
    response = CompletionResponse(id="c", created=1, model="m", choices=[CompletionChoice(index=0, text="é" * 100)])
    assert serialized_size(response) == len(response.model_dump_json().encode())
    assert serialized_size([response, response]) == 2 * serialized_size(response)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ResponseCache(max_bytes=0)
