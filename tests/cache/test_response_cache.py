"""Response cache: scopes never cross, every parameter matters, TTL expiry, LRU eviction, counters, threads."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from tkr_embed.cache.response_cache import ResponseCache, cache_key, is_cacheable
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.harmony.recipient_constraint import OneOfTokenSequences

PROMPT = [200006, 17360, 200008, 12194, 200007]
GREEDY = SamplingParams(temperature=0.0, max_tokens=16)


def key_for(scope: str = "key_a", **overrides: object) -> str:
    arguments: dict[str, object] = {
        "scope": scope,
        "endpoint": "/v1/chat/completions",
        "prompt_token_ids": PROMPT,
        "params": GREEDY,
        "stream": False,
        "model": "gpt-oss-20b",
    }
    arguments.update(overrides)
    return cache_key(**arguments)  # type: ignore[arg-type]


def test_only_deterministic_requests_are_cacheable() -> None:
    assert is_cacheable(SamplingParams(temperature=0.0))
    assert is_cacheable(SamplingParams(temperature=0.8, seed=7))
    assert not is_cacheable(SamplingParams(temperature=0.8))


def test_entries_never_cross_key_scopes() -> None:
    cache: ResponseCache[str] = ResponseCache(max_size=10)
    cache.put(key_for("key_a"), "answer for tenant a")
    assert cache.get(key_for("key_a")) == "answer for tenant a"
    assert cache.get(key_for("key_b")) is None
    assert cache.get(key_for("master")) is None
    with pytest.raises(ValueError):
        key_for("")


def test_every_input_changes_the_key() -> None:
    base = key_for()
    assert key_for() == base  # stable
    variants = [
        key_for(stream=True),
        key_for(endpoint="/v1/completions"),
        key_for(model="gpt-oss-120b"),
        key_for(prompt_token_ids=PROMPT[:-1]),
        key_for(prompt_token_ids=PROMPT + [0]),
    ]
    for field in dataclasses.fields(SamplingParams):
        changed = {
            "n": 2,
            "max_tokens": 17,
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 5,
            "min_p": 0.1,
            "repetition_penalty": 1.1,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.5,
            "seed": 1,
            "logprobs": 2,
            "prompt_logprobs": 1,
            "ignore_eos": True,
            "stop_token_ids": [1],
            "stop": ["x"],
            "include_stop_str_in_output": True,
            "constraint": OneOfTokenSequences(((1, 2),)),
            "logit_bias": ((5, -100.0),),
        }[field.name]
        variants.append(key_for(params=dataclasses.replace(GREEDY, **{field.name: changed})))
    assert len(set(variants)) == len(variants) and base not in variants


def test_ttl_expiry() -> None:
    now = [100.0]
    cache: ResponseCache[str] = ResponseCache(max_size=10, ttl_seconds=30, clock=lambda: now[0])
    cache.put("k", "v")
    now[0] = 129.9
    assert cache.get("k") == "v"
    now[0] = 130.0
    assert cache.get("k") is None
    assert len(cache) == 0
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.expirations) == (1, 1, 1)


def test_lru_eviction_keeps_recently_used() -> None:
    cache: ResponseCache[int] = ResponseCache(max_size=3)
    for index, key in enumerate("abc"):
        cache.put(key, index)
    assert cache.get("a") == 0  # "a" is now the most recent; "b" the least
    cache.put("d", 3)
    assert cache.get("b") is None
    assert [cache.get(key) for key in "acd"] == [0, 2, 3]
    stats = cache.stats()
    assert stats.size == 3 and stats.evictions == 1
    assert (stats.hits, stats.misses) == (4, 1) and stats.hit_rate == pytest.approx(0.8)


def test_concurrent_threads_keep_the_bound_and_exact_counters() -> None:
    cache: ResponseCache[int] = ResponseCache(max_size=50)

    def worker(offset: int) -> None:
        for index in range(500):
            cache.put(f"{offset}-{index % 80}", index)
            cache.get(f"{offset}-{(index * 7) % 80}")

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = cache.stats()
    assert stats.size == 50
    assert stats.hits + stats.misses == 2000
