"""Rate limits: request N+1 refused with the right headers, burst bucket, tokens, Redis shared by processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest

from tkr_embed.security.keys import KeyLimits
from tkr_embed.security.ratelimit import RateLimiter, RateLimits, format_reset
from tkr_embed.security.token_bucket import MemoryTokenBucketStore

ONLY_MINUTE = RateLimits(burst=None, requests_per_minute=5, requests_per_hour=None, requests_per_day=None)


async def test_request_n_plus_one_is_refused_with_headers() -> None:
    limiter = RateLimiter()
    decisions = [await limiter.check("key_a", ONLY_MINUTE) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining_requests for d in decisions] == [4, 3, 2, 1, 0, 0]
    refused = decisions[-1]
    assert refused.limited_by == "requests_per_minute"
    assert 0 < refused.retry_after_s <= 60
    headers = refused.headers()
    assert headers["x-ratelimit-limit-requests"] == "5"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert 1 <= int(headers["retry-after"]) <= 60
    assert "x-ratelimit-limit-tokens" not in headers
    assert "retry-after" not in decisions[0].headers()
    assert limiter.rejections == 1
    # Another key has its own budget.
    assert (await limiter.check("key_b", ONLY_MINUTE)).allowed


async def test_refused_requests_consume_nothing() -> None:
    limits = RateLimits(burst=None, requests_per_minute=2, requests_per_hour=3, requests_per_day=None)
    limiter = RateLimiter()
    assert [(await limiter.check("k", limits)).allowed for _ in range(5)] == [True, True, False, False, False]
    # Only the two admitted requests count against the hour: one left there.
    bigger_minute = RateLimits(burst=None, requests_per_minute=100, requests_per_hour=3, requests_per_day=None)
    decision = await limiter.check("k", bigger_minute)
    assert decision.allowed and decision.limit_requests == 3 and decision.remaining_requests == 0
    assert not (await limiter.check("k", bigger_minute)).allowed


async def test_burst_bucket_refuses_then_refills() -> None:
    now = [1000.0]
    limiter = RateLimiter(bucket_store=MemoryTokenBucketStore(clock=lambda: now[0]))
    limits = RateLimits(burst=3, requests_per_minute=60, requests_per_hour=None, requests_per_day=None)
    assert [(await limiter.check("k", limits)).allowed for _ in range(4)] == [True, True, True, False]
    refused = await limiter.check("k", limits)
    assert refused.limited_by == "burst" and refused.limit_requests == 3 and refused.remaining_requests == 0
    assert refused.retry_after_s == pytest.approx(1.0)  # 60 per minute: one token a second
    assert refused.headers()["retry-after"] == "1"
    now[0] += 1.0
    assert (await limiter.check("k", limits)).allowed
    assert not (await limiter.check("k", limits)).allowed


async def test_tokens_per_minute_limit_and_headers() -> None:
    limits = RateLimits(
        burst=None, requests_per_minute=100, requests_per_hour=None, requests_per_day=None, tokens_per_minute=1000
    )
    limiter = RateLimiter()
    first = await limiter.check("k", limits, cost_tokens=600)
    assert first.allowed and first.remaining_tokens == 400
    headers = first.headers()
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert headers["x-ratelimit-remaining-tokens"] == "400"
    assert "x-ratelimit-reset-tokens" in headers
    refused = await limiter.check("k", limits, cost_tokens=500)
    assert not refused.allowed and refused.limited_by == "tokens_per_minute"
    assert refused.remaining_tokens == 400 and refused.remaining_requests == 99  # nothing consumed
    assert (await limiter.check("k", limits, cost_tokens=400)).allowed


def test_per_key_overrides_and_defaults() -> None:
    defaults = RateLimits()
    assert (defaults.burst, defaults.requests_per_minute, defaults.requests_per_hour, defaults.requests_per_day) == (
        10,
        60,
        1000,
        10000,
    )
    merged = defaults.with_overrides(KeyLimits(requests_per_minute=5, tokens_per_minute=900))
    assert merged == RateLimits(
        burst=10, requests_per_minute=5, requests_per_hour=1000, requests_per_day=10000, tokens_per_minute=900
    )
    assert defaults.with_overrides(None) is defaults


def test_reset_durations_read_like_openai() -> None:
    assert [format_reset(s) for s in (0, 0.02, 1, 59.2, 360, 3600)] == ["0s", "20ms", "1s", "1m0s", "6m0s", "1h0m0s"]


async def test_two_limiters_share_one_limit_through_redis(redis_url: str) -> None:
    key_id = f"shared-{uuid.uuid4().hex}"
    limits = RateLimits(burst=None, requests_per_minute=4, requests_per_hour=None, requests_per_day=None)
    first, second = RateLimiter(redis_url), RateLimiter(redis_url)
    try:
        allowed = [(await (first if i % 2 else second).check(key_id, limits)).allowed for i in range(4)]
        assert allowed == [True] * 4
        refused = await second.check(key_id, limits)
        assert not refused.allowed and refused.remaining_requests == 0 and refused.limit_requests == 4
        assert not (await first.check(key_id, limits)).allowed
        # Each refusal is counted once, per key, and both replicas see the shared count.
        assert (first.rejections, second.rejections) == (1, 1)
        assert (await first.rejections_by_key())[key_id] == 2
        assert (await second.rejections_by_key())[key_id] == 2
    finally:
        await first.close()
        await second.close()


async def test_rejections_are_counted_per_key_in_memory() -> None:
    limiter = RateLimiter()
    for key_id, attempts in (("key_a", 7), ("key_b", 6), ("key_c", 2)):
        for _ in range(attempts):
            await limiter.check(key_id, ONLY_MINUTE)
    assert await limiter.rejections_by_key() == {"key_a": 2, "key_b": 1}
    assert limiter.rejections == 3


async def test_burst_bucket_is_shared_through_redis(redis_url: str) -> None:
    key_id = f"burst-{uuid.uuid4().hex}"
    # No window limits, so only the bucket binds; it refills one token an hour (none during the test).
    bucket_only = RateLimits(
        burst=3, requests_per_minute=None, requests_per_hour=None, requests_per_day=None, burst_refill_per_s=1 / 3600
    )
    first, second = RateLimiter(redis_url), RateLimiter(redis_url)
    try:
        results = [await (first if i % 2 else second).check(key_id, bucket_only) for i in range(4)]
        assert [r.allowed for r in results] == [True, True, True, False]
        assert results[-1].limited_by == "burst"
        assert results[-1].retry_after_s == pytest.approx(3600, abs=5)
    finally:
        await first.close()
        await second.close()


_CHILD = """
import asyncio, json, sys
from tkr_embed.security.ratelimit import RateLimiter, RateLimits

async def main() -> None:
    url, key_id, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    limiter = RateLimiter(url)
    limits = RateLimits(burst=None, requests_per_minute=5, requests_per_hour=None, requests_per_day=None)
    decisions = [await limiter.check(key_id, limits) for _ in range(count)]
    await limiter.close()
    print(json.dumps([[d.allowed, d.headers()] for d in decisions]))

asyncio.run(main())
"""


def _run_child(redis_url: str, key_id: str, count: int) -> list:
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, redis_url, key_id, str(count)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(completed.stdout)


def test_two_processes_share_one_limit_through_redis(redis_url: str) -> None:
    key_id = f"procs-{uuid.uuid4().hex}"
    first = _run_child(redis_url, key_id, 3)
    second = _run_child(redis_url, key_id, 3)
    assert [allowed for allowed, _ in first] == [True, True, True]
    assert [allowed for allowed, _ in second] == [True, True, False]
    assert second[1][1]["x-ratelimit-remaining-requests"] == "0"
    refused_headers = second[2][1]
    assert refused_headers["x-ratelimit-limit-requests"] == "5"
    assert refused_headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(refused_headers["retry-after"]) <= 60


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_concurrent_checks_admit_exactly_the_limit(backend: str, request: pytest.FixtureRequest) -> None:
    url = "memory://" if backend == "memory" else request.getfixturevalue("redis_url")
    limiter = RateLimiter(url)
    key_id = f"concurrent-{uuid.uuid4().hex}"
    limits = RateLimits(
        burst=8, requests_per_minute=5, requests_per_hour=None, requests_per_day=None, burst_refill_per_s=1e-6
    )
    try:
        decisions = await asyncio.gather(*(limiter.check(key_id, limits) for _ in range(30)))
    finally:
        await limiter.close()
    assert sum(d.allowed for d in decisions) == 5
    assert limiter.rejections == 25
