"""AsyncEngine: streams, abort when the consumer goes away, overload, shutdown."""

from __future__ import annotations

import asyncio

import pytest
from engine_fakes import ToyRunner, ToyTokenizer

from tkr_embed.engine.async_engine import AsyncEngine
from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.errors import EngineDeadError, EngineOverloadedError, InvalidRequestError
from tkr_embed.engine.outputs import FinishReason
from tkr_embed.engine.sampling_params import SamplingParams

LONG = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)
SHORT = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)


def make_engine(**config) -> AsyncEngine:
    # steps of 1 ms, as a device's: a stream of LONG cannot be computed to its end before the test's
    # abort or cancel reaches the engine thread
    return AsyncEngine.from_runner(ToyRunner(step_delay_s=0.001), ToyTokenizer(), EngineConfig(**config))


async def wait_until_idle(engine: AsyncEngine) -> None:
    for _ in range(500):
        stats = engine.stats()
        if stats.running == 0 and stats.waiting == 0 and stats.kv_blocks_used == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"engine never went idle: {engine.stats()}")


async def test_stream_deltas_add_up_to_the_final_output() -> None:
    engine = make_engine()
    outputs = [o async for o in engine.generate("a", [1, 2, 3], SHORT)]
    assert outputs[-1].finished and not any(o.finished for o in outputs[:-1])
    deltas = [t for o in outputs for t in o.outputs[0].new_token_ids]
    assert deltas == outputs[-1].outputs[0].token_ids and len(deltas) == 6
    assert "".join(o.outputs[0].new_text for o in outputs) == outputs[-1].outputs[0].text
    await engine.shutdown()


async def test_concurrent_streams_match_sequential_results() -> None:
    engine = make_engine()
    prompts = [[i, i + 1, i + 2] for i in range(8)]

    async def collect(i: int) -> list[int]:
        outputs = [output async for output in engine.generate(f"r{i}", prompts[i], SHORT)]
        return outputs[-1].outputs[0].token_ids

    together = await asyncio.gather(*(collect(i) for i in range(8)))
    alone = [await collect(i) for i in range(8)]
    assert together == alone
    await engine.shutdown()


async def test_aclose_aborts_and_frees_blocks() -> None:
    engine = make_engine()
    stream = engine.generate("a", list(range(10)), LONG)
    first = await stream.__anext__()
    assert not first.finished
    assert engine.stats().kv_blocks_used > 0
    await stream.aclose()
    await wait_until_idle(engine)
    assert engine.stats().tokens_decoded < LONG.max_tokens // 2  # aborted, not run to its end
    await engine.shutdown()


async def test_cancelled_consumer_aborts_the_request() -> None:
    engine = make_engine()
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate("a", list(range(10)), LONG):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until_idle(engine)
    assert engine.stats().tokens_decoded < LONG.max_tokens // 2  # aborted, not run to its end
    await engine.shutdown()


async def test_abort_ends_the_stream_with_abort() -> None:
    engine = make_engine()
    stream = engine.generate("a", [1, 2, 3], LONG)
    await stream.__anext__()
    await engine.abort("a")
    outputs = [o async for o in stream]
    assert outputs[-1].finished and outputs[-1].outputs[0].finish_reason is FinishReason.ABORT
    await wait_until_idle(engine)
    await engine.shutdown()


async def test_errors_raise_on_first_next_before_any_output() -> None:
    engine = make_engine(max_waiting=1)
    with pytest.raises(InvalidRequestError):
        await engine.generate("bad", [], SHORT).__anext__()
    engine.engine.add_request("queued", [1, 2], SHORT)  # fills the waiting queue (loop not yet stepped)
    with pytest.raises(EngineOverloadedError):
        await engine.generate("over", [1, 2], SHORT).__anext__()
    await engine.shutdown(graceful=False)


async def test_graceful_shutdown_finishes_in_flight_then_refuses() -> None:
    engine = make_engine()
    stream = engine.generate("a", [1, 2, 3], SHORT)
    first = await stream.__anext__()
    shutdown = asyncio.create_task(engine.shutdown(graceful=True, timeout_s=10))
    rest = [o async for o in stream]
    await shutdown
    final = (rest or [first])[-1]
    assert final.outputs[0].finish_reason is FinishReason.LENGTH and len(final.outputs[0].token_ids) == 6
    with pytest.raises(EngineDeadError):
        await engine.generate("b", [1], SHORT).__anext__()


async def test_hard_shutdown_aborts_in_flight() -> None:
    engine = make_engine()
    stream = engine.generate("a", [1, 2, 3], LONG)
    await stream.__anext__()
    await engine.shutdown(graceful=False)
    outputs = [o async for o in stream]
    assert outputs[-1].outputs[0].finish_reason is FinishReason.ABORT
    assert engine.stats().kv_blocks_used == 0
