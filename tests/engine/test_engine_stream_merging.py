"""A consumer slower than the steps (a busy event loop) reads its queued updates as one: every token, its text and
its logprobs once, in order, and an error queued behind them still raised after them."""

from __future__ import annotations

import asyncio
import time

import pytest
from engine_fakes import ToyRunner, ToyTokenizer

from tkr_embed.engine.async_engine import AsyncEngine
from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.errors import EngineDeadError
from tkr_embed.engine.outputs import FinishReason
from tkr_embed.engine.sampling_params import SamplingParams

PROMPT = [1, 2, 3]


def make_engine() -> AsyncEngine:
    return AsyncEngine.from_runner(ToyRunner(step_delay_s=0.001), ToyTokenizer(), EngineConfig())


async def collect(engine: AsyncEngine, request_id: str, params: SamplingParams, lag_s: float) -> list:
    updates = []
    async for update in engine.generate(request_id, PROMPT, params):
        updates.append(update)
        time.sleep(lag_s)  # holds the event loop, as a server busy with other streams does
    return updates


def per_completion(updates: list, index: int) -> tuple[list[int], str, list[tuple[int, float]]]:
    parts = [c for u in updates for c in u.outputs if c.index == index]
    return (
        [t for c in parts for t in c.new_token_ids],
        "".join(c.new_text for c in parts),
        [(lp.token_id, lp.logprob) for c in parts for lp in c.new_logprobs or []],
    )


async def test_a_lagging_consumer_gets_every_token_once_in_fewer_updates() -> None:
    engine = make_engine()
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True, logprobs=2)
    try:
        prompt_pace = await collect(engine, "a", params, lag_s=0.0)
        lagging = await collect(engine, "b", params, lag_s=0.02)
    finally:
        await engine.shutdown()
    assert len(lagging) < 20 < len(prompt_pace)  # 1 ms steps against 20 ms turns: several tokens an update
    assert [u.finished for u in lagging] == [False] * (len(lagging) - 1) + [True]
    tokens, text, logprobs = per_completion(lagging, 0)
    assert (tokens, text, logprobs) == per_completion(prompt_pace, 0)
    assert len(tokens) == 40 and len(logprobs) == 40
    last = lagging[-1].outputs[0]
    assert last.token_ids == tokens and last.text == text and last.finish_reason == FinishReason.LENGTH
    assert lagging[-1].num_completion_tokens == 40


async def test_merged_updates_keep_each_of_n_completions_apart() -> None:
    engine = make_engine()
    params = SamplingParams(max_tokens=30, temperature=1.0, seed=5, n=3, ignore_eos=True)
    try:
        prompt_pace = await collect(engine, "a", params, lag_s=0.0)
        lagging = await collect(engine, "b", params, lag_s=0.02)
    finally:
        await engine.shutdown()
    assert len(lagging) < len(prompt_pace)
    for index in range(3):
        assert per_completion(lagging, index) == per_completion(prompt_pace, index)
    assert [c.index for c in lagging[-1].outputs] == [0, 1, 2]
    assert all(c.finish_reason == FinishReason.LENGTH for c in lagging[-1].outputs)


async def test_an_error_queued_behind_updates_is_raised_after_them() -> None:
    engine = make_engine()
    stream = engine.generate("a", PROMPT, SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True))
    try:
        await anext(stream)
        time.sleep(0.05)  # several steps run meanwhile
        await asyncio.sleep(0)  # their updates reach the queue
        engine._fail_all(EngineDeadError("the engine process died"))  # queued behind them, as a death is
        merged = await anext(stream)
        assert len(merged.outputs[0].new_token_ids) > 1 and not merged.finished
        with pytest.raises(EngineDeadError, match="died"):
            await anext(stream)
    finally:
        await stream.aclose()
        await engine.shutdown()
