"""One log line every `server.log_stats_interval_s` while the engine works, as `vllm serve` prints: prompt and
generation throughput over the interval, running and waiting requests, KV cache use and the prefix-cache hit rate.
A quiet engine writes nothing; a long request shows up as progress every interval."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from tkr_embed.engine.client import EngineClient
from tkr_embed.engine.outputs import EngineStats

logger = logging.getLogger("tkr_embed.stats")


@dataclass(frozen=True)
class IntervalStats:
    """What the engine did between two snapshots of its statistics."""

    prompt_tokens_per_s: float
    generation_tokens_per_s: float
    running: int
    waiting: int
    kv_cache_usage: float
    prefix_cache_hit_rate: float

    @property
    def is_quiet(self) -> bool:
        return not (self.prompt_tokens_per_s or self.generation_tokens_per_s or self.running or self.waiting)

    def message(self) -> str:
        return (
            f"Avg prompt throughput: {self.prompt_tokens_per_s:.1f} tokens/s, "
            f"Avg generation throughput: {self.generation_tokens_per_s:.1f} tokens/s, "
            f"Running: {self.running} reqs, Waiting: {self.waiting} reqs, "
            f"KV cache usage: {self.kv_cache_usage:.1%}, Prefix cache hit rate: {self.prefix_cache_hit_rate:.1%}"
        )


def interval_stats(before: EngineStats, after: EngineStats, elapsed_s: float) -> IntervalStats:
    """The interval from `before` to `after`. A restarted engine (a new `engine_id`, as the metrics tell it) counts
    from zero again, so the interval counts what the new engine did; so does a count that fell, for an engine that
    reports no id."""
    restarted = after.engine_id != before.engine_id

    def grown(now: int, then: int) -> int:
        return now if restarted or now < then else now - then

    elapsed_s = max(elapsed_s, 1e-9)
    queries = grown(after.prefix_cache_queries, before.prefix_cache_queries)
    hits = grown(after.prefix_cache_hits, before.prefix_cache_hits)
    return IntervalStats(
        prompt_tokens_per_s=grown(after.prompt_tokens_prefilled, before.prompt_tokens_prefilled) / elapsed_s,
        generation_tokens_per_s=grown(after.tokens_decoded, before.tokens_decoded) / elapsed_s,
        running=after.running,
        waiting=after.waiting,
        kv_cache_usage=after.kv_usage,
        prefix_cache_hit_rate=min(hits, queries) / queries if queries else 0.0,
    )


def _snapshot(engine: EngineClient) -> EngineStats | None:
    try:
        return engine.stats()
    except RuntimeError:  # no engine process to ask (restarting)
        return None


async def log_engine_stats(engine: EngineClient, interval_s: float) -> None:
    """Runs until cancelled (a task of the server's lifespan)."""
    before, before_at = _snapshot(engine), time.monotonic()
    while True:
        await asyncio.sleep(interval_s)
        after, after_at = _snapshot(engine), time.monotonic()
        if before is not None and after is not None:
            interval = interval_stats(before, after, after_at - before_at)
            if not interval.is_quiet:
                logger.info(
                    interval.message(),
                    extra={
                        "prompt_tokens_per_s": round(interval.prompt_tokens_per_s, 1),
                        "generation_tokens_per_s": round(interval.generation_tokens_per_s, 1),
                        "running": interval.running,
                        "waiting": interval.waiting,
                        "kv_cache_usage": round(interval.kv_cache_usage, 4),
                        "prefix_cache_hit_rate": round(interval.prefix_cache_hit_rate, 4),
                    },
                )
        if after is not None:
            before, before_at = after, after_at
