"""Rate limits count what a request starts, not one per request: its sequences (prompts x n) in the request
windows and the burst bucket, its prompt + max_tokens in tokens per minute. A request larger than a whole
window is admitted only into an empty window, which it then fills; a refused charge consumes nothing."""

from __future__ import annotations

import pytest

from tkr_embed.security.ratelimit import RateLimiter, RateLimits

PER_MINUTE = RateLimits(burst=1000, requests_per_minute=100, requests_per_hour=None, requests_per_day=None)


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> RateLimiter:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    limiter = RateLimiter(url, key_prefix=f"cost-{request.node.name}")
    yield limiter
    await limiter.close()


async def test_64_prompts_x_n2_count_as_128_sequences_not_one_request(limiter: RateLimiter) -> None:
    # 30 ordinary requests, then one of 64 prompts x n=2: it needs the 70 left and more, so it is refused...
    for _ in range(30):
        assert (await limiter.check("tenant", PER_MINUTE)).allowed
    assert (await limiter.check("tenant", PER_MINUTE)).allowed  # the door counts its first sequence
    refused = await limiter.charge("tenant", PER_MINUTE, sequences=128, tokens=0)
    assert not refused.allowed and refused.limited_by == "requests_per_minute"
    assert refused.headers()["x-ratelimit-remaining-requests"] == "0"
    # ...and consumed nothing: 69 one-sequence requests still fit, the 70th does not.
    assert all([(await limiter.check("tenant", PER_MINUTE)).allowed for _ in range(69)])
    assert not (await limiter.check("tenant", PER_MINUTE)).allowed


async def test_a_request_larger_than_the_window_fills_an_empty_window(limiter: RateLimiter) -> None:
    assert (await limiter.check("big", PER_MINUTE)).allowed
    admitted = await limiter.charge("big", PER_MINUTE, sequences=128, tokens=0)
    assert admitted.allowed and admitted.remaining_requests == 0
    assert not (await limiter.check("big", PER_MINUTE)).allowed


async def test_tokens_per_minute_are_charged_in_advance_by_prompt_and_max_tokens(limiter: RateLimiter) -> None:
    limits = RateLimits(burst=None, requests_per_minute=None, requests_per_hour=None, requests_per_day=None,
                        tokens_per_minute=10_000)  # fmt: skip
    assert (await limiter.check("tokens", limits)).allowed
    first = await limiter.charge("tokens", limits, sequences=2, tokens=2 * (1000 + 3000))
    assert first.allowed and first.remaining_tokens == 2000
    assert (await limiter.check("tokens", limits)).allowed
    refused = await limiter.charge("tokens", limits, sequences=1, tokens=1000 + 3000)
    assert not refused.allowed and refused.limited_by == "tokens_per_minute"
    assert int(refused.headers()["retry-after"]) >= 1


async def test_the_burst_bucket_is_charged_by_sequences(limiter: RateLimiter) -> None:
    limits = RateLimits(burst=10, requests_per_minute=1000, requests_per_hour=None, requests_per_day=None)
    assert (await limiter.check("bursty", limits)).allowed
    assert (await limiter.charge("bursty", limits, sequences=8, tokens=0)).allowed  # 8 of the 10 in all
    assert (await limiter.check("bursty", limits)).allowed
    assert (await limiter.check("bursty", limits)).allowed
    refused = await limiter.check("bursty", limits)
    assert not refused.allowed and refused.limited_by == "burst"
