"""The periodic engine stats line: throughput over the interval, queues and KV use as vLLM prints them; nothing while
the engine is quiet; a restarted engine (counts from zero) is not reported as negative throughput."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest

from tkr_embed.api.stats_log import interval_stats, log_engine_stats
from tkr_embed.engine.outputs import EngineStats

IDLE = EngineStats(
    running=0,
    waiting=0,
    kv_blocks_total=200,
    kv_blocks_used=0,
    kv_blocks_free=200,
    prefix_cache_queries=0,
    prefix_cache_hits=0,
    prompt_tokens_prefilled=0,
    tokens_decoded=0,
    requests_finished=0,
    preemptions=0,
)


def test_the_line_reports_the_interval_as_vllm_does() -> None:
    busy = replace(
        IDLE,
        running=3,
        waiting=1,
        kv_blocks_used=50,
        prefix_cache_queries=400,
        prefix_cache_hits=100,
        prompt_tokens_prefilled=300,
        tokens_decoded=250,
    )
    stats = interval_stats(IDLE, busy, elapsed_s=2.0)
    assert (stats.prompt_tokens_per_s, stats.generation_tokens_per_s) == (150.0, 125.0)
    assert stats.message() == (
        "Avg prompt throughput: 150.0 tokens/s, Avg generation throughput: 125.0 tokens/s, "
        "Running: 3 reqs, Waiting: 1 reqs, KV cache usage: 25.0%, Prefix cache hit rate: 25.0%"
    )
    assert not stats.is_quiet


def test_a_quiet_engine_is_quiet_and_a_running_one_is_not() -> None:
    assert interval_stats(IDLE, IDLE, 10.0).is_quiet
    assert not interval_stats(IDLE, replace(IDLE, waiting=1), 10.0).is_quiet  # queued, nothing computed yet


def test_a_restarted_engine_counts_from_zero() -> None:
    before = replace(IDLE, tokens_decoded=10_000, prompt_tokens_prefilled=5_000, engine_id="first")
    after = replace(IDLE, running=1, tokens_decoded=40, prompt_tokens_prefilled=20, engine_id="second")
    stats = interval_stats(before, after, 2.0)
    assert (stats.generation_tokens_per_s, stats.prompt_tokens_per_s) == (20.0, 10.0)
    # the same without ids: the counts fell, so the engine started again
    stats = interval_stats(replace(before, engine_id=""), replace(after, engine_id=""), 2.0)
    assert (stats.generation_tokens_per_s, stats.prompt_tokens_per_s) == (20.0, 10.0)


def test_a_restarted_engine_that_already_passed_the_old_counts_still_counts_from_zero() -> None:
    before = replace(IDLE, tokens_decoded=100, engine_id="first")
    after = replace(IDLE, running=1, tokens_decoded=300, engine_id="second")
    assert interval_stats(before, after, 2.0).generation_tokens_per_s == 150.0


class CountingEngine:
    """Stats that grow while `working` is set, as an engine's counters do."""

    def __init__(self) -> None:
        self.current = IDLE
        self.working = False

    def stats(self) -> EngineStats:
        if self.working:
            self.current = replace(self.current, running=1, tokens_decoded=self.current.tokens_decoded + 5)
        else:
            self.current = replace(self.current, running=0)
        return self.current


async def test_lines_appear_while_the_engine_works_and_stop_when_it_is_idle(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tkr_embed.stats")
    engine = CountingEngine()
    task = asyncio.create_task(log_engine_stats(engine, 0.02))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.2)
        assert [r for r in caplog.records if r.name == "tkr_embed.stats"] == []  # idle: nothing written
        engine.working = True
        await asyncio.sleep(0.2)
        working = [r for r in caplog.records if r.name == "tkr_embed.stats"]
        assert len(working) >= 3
        assert all("Running: 1 reqs" in r.getMessage() and r.generation_tokens_per_s > 0 for r in working)
        engine.working = False
        await asyncio.sleep(0.1)
        settled = len([r for r in caplog.records if r.name == "tkr_embed.stats"])
        await asyncio.sleep(0.2)
        assert len([r for r in caplog.records if r.name == "tkr_embed.stats"]) == settled
    finally:
        task.cancel()
