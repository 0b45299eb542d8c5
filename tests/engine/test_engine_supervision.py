"""A dead or hung engine is seen at once: its streams fail with EngineDeadError, it says why, and it restarts."""

from __future__ import annotations

import asyncio
import time

import pytest
from engine_fakes import ToyBuild, ToyRunner, ToyTokenizer

from tkr_embed.engine.async_engine import AsyncEngine
from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.engine_process import ProcessEngine
from tkr_embed.engine.errors import EngineDeadError
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import FinishReason
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.step_loop import AddRequest, CallerPort, StepLoop

ENDLESS = SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)
SHORT = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
HANG = 50  # a prompt holding this token hangs the toy device


async def _drain(stream) -> BaseException | None:
    """Read a stream to its end; the error that ended it, if any."""
    try:
        async for _ in stream:
            pass
    except Exception as exc:  # noqa: BLE001 - returned to the test
        return exc
    return None


async def _served(engine, request_id: str) -> FinishReason:
    outputs = [output async for output in engine.generate(request_id, [1, 2, 3], SHORT)]
    return outputs[-1].outputs[0].finish_reason


async def test_a_killed_engine_process_fails_every_stream_at_once_and_says_why() -> None:
    engine = ProcessEngine(ToyBuild(step_delay_s=0.01))
    try:
        streams = [engine.generate(f"r{i}", [1, 2, 3 + i], ENDLESS) for i in range(3)]
        for stream in streams:
            await anext(stream)
        waiting = asyncio.ensure_future(anext(engine.generate("queued", [4, 5], ENDLESS)))
        killed = time.monotonic()
        engine._process.kill()
        errors = await asyncio.wait_for(asyncio.gather(*(_drain(s) for s in streams)), 5)
        with pytest.raises(EngineDeadError):
            await asyncio.wait_for(waiting, 5)
        noticed_s = time.monotonic() - killed
        assert all(isinstance(error, EngineDeadError) for error in errors)
        assert noticed_s < 2.0
        assert not engine.is_running
        assert "SIGKILL" in engine.dead_reason
        with pytest.raises(EngineDeadError, match="SIGKILL"):
            await anext(engine.generate("after", [1, 2], SHORT))
    finally:
        await engine.shutdown()


async def test_a_dead_engine_process_restarts_and_serves_again() -> None:
    engine = ProcessEngine(ToyBuild())
    try:
        assert await _served(engine, "before") is FinishReason.LENGTH
        first_pid = engine._process.pid
        engine._process.kill()
        for _ in range(200):
            if engine.dead_reason is not None:
                break
            await asyncio.sleep(0.01)
        assert not engine.is_running
        await engine.restart()
        assert engine.is_running and engine.dead_reason is None
        assert engine._process.pid != first_pid
        assert await _served(engine, "after") is FinishReason.LENGTH
        assert engine.stats().requests_finished == 1  # the new process counts from zero
    finally:
        await engine.shutdown()
    with pytest.raises(EngineDeadError, match="shut down"):
        await engine.restart()


async def test_a_hung_step_is_taken_for_engine_death_and_the_process_is_killed() -> None:
    engine = ProcessEngine(ToyBuild(hang_on_token=HANG), step_timeout_s=1.0)
    try:
        assert await _served(engine, "fine") is FinishReason.LENGTH
        hung = engine.generate("hung", [1, HANG, 2], ENDLESS)
        began = time.monotonic()
        with pytest.raises(EngineDeadError, match="no progress"):
            await asyncio.wait_for(anext(hung), 10)
        assert time.monotonic() - began < 4.0  # the 1 s limit, plus the watchdog's look every 0.25 s
        assert not engine.is_running and "step_timeout_s" in engine.dead_reason
        await asyncio.to_thread(engine._process.join, 5)
        assert engine._process.exitcode == -9  # killed, not left hanging
        await engine.restart()
        assert await _served(engine, "again") is FinishReason.LENGTH
    finally:
        await engine.shutdown()


async def test_a_slow_but_moving_engine_is_not_taken_for_hung() -> None:
    # each step takes 0.3 s against a 1 s limit: 20 steps take longer than the limit, and that is fine
    engine = ProcessEngine(ToyBuild(step_delay_s=0.3), step_timeout_s=1.0)
    try:
        outputs = [o async for o in engine.generate("slow", [1, 2, 3], SamplingParams(max_tokens=8, ignore_eos=True))]
        assert outputs[-1].finished and engine.is_running and engine.dead_reason is None
    finally:
        await engine.shutdown()


async def test_a_crashed_engine_thread_says_why_and_cannot_restart() -> None:
    class Crashing(ToyRunner):
        def execute(self, batch):
            raise RuntimeError("device lost")

    engine = AsyncEngine.from_runner(Crashing(), ToyTokenizer(), EngineConfig())
    error = await _drain(engine.generate("r", [1, 2, 3], SHORT))
    assert isinstance(error, EngineDeadError)
    assert not engine.is_running and "device lost" in engine.dead_reason
    with pytest.raises(EngineDeadError):
        await engine.restart()
    await engine.shutdown()


def test_the_step_loop_reports_a_step_in_flight_until_its_tokens_are_read() -> None:
    class Recording(CallerPort):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            self.reports: list[bool] = []

        def progress(self, step_in_flight: bool) -> None:
            self.reports.append(step_in_flight)

    engine = LLMEngine(ToyRunner(), ToyTokenizer(), EngineConfig())
    port = Recording(engine, [AddRequest("a", [1, 2, 3], SHORT, 0.0)], lambda output: None)
    StepLoop(engine, port).run()
    # one report as each step is launched, one as its tokens are read; none left in flight at the end
    assert port.reports == [True, False] * SHORT.max_tokens
