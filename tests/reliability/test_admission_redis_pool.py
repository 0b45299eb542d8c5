"""A key's limit shared through Redis holds under concurrency: 500 simultaneous checks on a 100/minute key
admit exactly 100 and refuse the rest, however many wait for a Redis connection at once; a pool that stays
exhausted refuses (limiter_busy), and only a store that is down raises (the fail-open path)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))

from redis_support import free_port  # noqa: E402

from tkr_embed.security.ratelimit import RateDecision, RateLimiter, RateLimits  # noqa: E402

PER_MINUTE = RateLimits(burst=10_000, requests_per_minute=100, requests_per_hour=10_000, requests_per_day=100_000)


def _admitted(results: list[RateDecision | BaseException]) -> int:
    # What the gateway does with each outcome: an error is "the store is down", which fail-open admits.
    return sum(1 for r in results if isinstance(r, BaseException) or r.allowed)


async def test_500_concurrent_checks_on_a_100_per_minute_key_admit_exactly_100(redis_url: str) -> None:
    limiter = RateLimiter(redis_url, key_prefix="pool-test")
    try:
        results = await asyncio.gather(
            *(limiter.check("tenant", PER_MINUTE) for _ in range(500)), return_exceptions=True
        )
    finally:
        await limiter.close()
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert _admitted(results) == 100


async def test_a_pool_that_stays_exhausted_refuses_instead_of_admitting(redis_url: str) -> None:
    limiter = RateLimiter(redis_url, key_prefix="busy-test", max_connections=1, pool_timeout_s=0.2)
    try:
        pool = limiter._redis.connection_pool  # hold the only connection, as a slow command would
        held = await pool.get_connection()
        try:
            decision = await limiter.check("tenant", PER_MINUTE)
        finally:
            await pool.release(held)
        assert not decision.allowed and decision.limiter_busy
        assert decision.headers()["retry-after"] == "1"
        assert (await limiter.check("tenant", PER_MINUTE)).allowed  # a free connection: checked as usual
    finally:
        await limiter.close()


async def test_a_store_that_is_down_still_raises_for_the_fail_open_decision() -> None:
    limiter = RateLimiter(f"redis://127.0.0.1:{free_port()}/0", key_prefix="down-test")
    try:
        with pytest.raises(Exception) as raised:
            await limiter.check("tenant", PER_MINUTE)
        assert "busy" not in type(raised.value).__name__.lower()
    finally:
        await limiter.close()
