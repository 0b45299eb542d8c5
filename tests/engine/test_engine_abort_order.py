"""A client that leaves right after submitting never leaves its request running: an abort that reaches the step
loop together with (or right behind) its add, while a step is on the device, ends that request."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

from engine_fakes import GatedToyRunner, ToyBuild, ToyTokenizer

from tkr_embed.engine.async_engine import AsyncEngine
from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.engine_child import PipePort, unwire
from tkr_embed.engine.engine_process import ProcessEngine
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import FinishReason, RequestOutput
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.step_loop import AddRequest, StepLoop

LONG = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)
SHORT = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)


class _PipeLoop:
    """The engine process's step loop and port, in a thread of this process over real pipes: the test writes
    what the server would, and a reader collects what the loop sends back."""

    def __init__(self, engine: LLMEngine) -> None:
        loop_requests, self._requests = multiprocessing.Pipe(duplex=False)
        self._events, self._loop_events = multiprocessing.Pipe(duplex=False)
        self._loop = threading.Thread(
            target=StepLoop(engine, PipePort(engine, loop_requests, self._loop_events)).run, daemon=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self.finals: dict[str, RequestOutput] = {}
        self.tokens: dict[str, int] = defaultdict(int)
        self._finished = threading.Condition()

    def send(self, *message) -> None:
        self._requests.send(message)

    def final(self, request_id: str, timeout: float = 10.0) -> RequestOutput:
        with self._finished:
            if not self._finished.wait_for(lambda: request_id in self.finals, timeout):
                raise AssertionError(f"{request_id} never finished")
            return self.finals[request_id]

    def _read(self) -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                kind, *body = self._events.recv()
                if kind != "outputs":
                    continue
                for update in body[0]:
                    if len(update) == 2:  # (request_id, refusal)
                        continue
                    output = unwire(update)
                    self.tokens[output.request_id] += sum(len(c.new_token_ids) for c in output.outputs)
                    if output.finished:
                        with self._finished:
                            self.finals[output.request_id] = output
                            self._finished.notify_all()

    def __enter__(self) -> _PipeLoop:
        self._loop.start()
        self._reader.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.send("stop")
        self._loop.join(timeout=30)
        self._loop_events.close()
        self._reader.join(timeout=30)


@contextlib.contextmanager
def _pipe_loop(runner: GatedToyRunner) -> Iterator[tuple[_PipeLoop, LLMEngine]]:
    engine = LLMEngine(runner, ToyTokenizer(), EngineConfig())
    with _PipeLoop(engine) as loop:
        yield loop, engine


def test_an_abort_right_behind_its_add_during_a_step_ends_the_request_unrun() -> None:
    runner = GatedToyRunner()
    with _pipe_loop(runner) as (loop, engine):
        loop.send("add", AddRequest("busy", [1, 2, 3], LONG, time.monotonic()))
        runner.hold_next_step()
        # The client leaves at once: its add and its abort both reach the loop while the step runs.
        loop.send("add", AddRequest("left", [4, 5, 6], LONG, time.monotonic()))
        loop.send("abort", "left")
        runner.let_go()
        left = loop.final("left")
        loop.send("abort", "busy")
        loop.final("busy")
        assert left.outputs[0].finish_reason is FinishReason.ABORT
        assert loop.tokens["left"] == 0
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.kv_blocks_used, stats.requests_finished) == (0, 0, 0, 0)


def test_an_abort_never_cancels_a_later_request_with_the_same_id() -> None:
    runner = GatedToyRunner()
    with _pipe_loop(runner) as (loop, engine):
        loop.send("add", AddRequest("busy", [1, 2, 3], LONG, time.monotonic()))
        runner.hold_next_step()
        loop.send("abort", "again")  # the abort of an earlier request "again", already gone
        loop.send("add", AddRequest("again", [7, 8], SHORT, time.monotonic()))
        runner.let_go()
        again = loop.final("again")
        loop.send("abort", "busy")
        loop.final("busy")
    assert again.outputs[0].finish_reason is FinishReason.LENGTH
    assert loop.tokens["again"] == SHORT.max_tokens


async def _wait_until_idle(engine, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = engine.stats()
        if stats.running == 0 and stats.waiting == 0 and stats.kv_blocks_used == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"requests still in the engine {timeout:g} s after every client left: {engine.stats()}")


async def _submit_and_leave(engine, request_id: str, prompt: list[int]) -> None:
    """Open a request, then cancel the consumer before its first output (a client that disconnected)."""
    first = asyncio.ensure_future(anext(engine.generate(request_id, prompt, LONG)))
    await asyncio.sleep(0.005)  # queued: the generator waits for its first output
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first


async def test_a_request_cancelled_while_a_step_runs_in_the_engine_thread_never_runs() -> None:
    runner = GatedToyRunner(step_delay_s=0.001)
    engine = AsyncEngine.from_runner(runner, ToyTokenizer(), EngineConfig())
    try:
        busy = engine.generate("busy", [1, 2, 3], LONG)
        await anext(busy)
        await asyncio.to_thread(runner.hold_next_step)
        await _submit_and_leave(engine, "left", [4, 5, 6])
        runner.let_go()
        await busy.aclose()
        await _wait_until_idle(engine, timeout=5)
        assert engine.stats().requests_finished == 0  # "left" did not run to its end
    finally:
        runner.let_go()
        await engine.shutdown()


async def test_requests_cancelled_while_the_engine_process_steps_never_run() -> None:
    # 50 ms steps: each request's add and abort reach the engine process during one step
    engine = ProcessEngine(ToyBuild(step_delay_s=0.05))
    try:
        busy = engine.generate("busy", [1, 2, 3], LONG)
        await anext(busy)
        for i in range(10):
            await _submit_and_leave(engine, f"left-{i}", [4, 5, 6 + i])
        await busy.aclose()
        # A request left running would need 200 steps (10 s) to end.
        await _wait_until_idle(engine, timeout=5)
        assert engine.stats().requests_finished == 0
        assert engine._progress == {}  # nothing kept here for a request nobody reads
    finally:
        await engine.shutdown()
