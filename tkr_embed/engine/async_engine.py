"""AsyncEngine: the step loop as a background asyncio task, with per-request streams and abort."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from tkr_embed.engine.client import EngineClient
from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.errors import EngineDeadError
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import EngineStats, RequestOutput
from tkr_embed.engine.runner import ModelRunner, RunnerInfo
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


class AsyncEngine(EngineClient):
    """Serves many concurrent `generate()` streams from one LLMEngine.

    The loop runs schedule and postprocess on the event loop and only `runner.execute` in a worker
    thread, so the engine's state is touched by one thread at a time and the event loop stays
    responsive. Aborts are applied between steps.
    """

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._streams: dict[str, asyncio.Queue[RequestOutput | BaseException]] = {}
        self._pending_aborts: list[str] = []
        self._wakeup: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._accepting = True
        self._dead_error: BaseException | None = None

    @classmethod
    def from_runner(
        cls, runner: ModelRunner, tokenizer: Tokenizer | None = None, config: EngineConfig | None = None
    ) -> AsyncEngine:
        return cls(LLMEngine(runner, tokenizer, config))

    @property
    def info(self) -> RunnerInfo:
        return self.engine.runner.info

    @property
    def is_running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    async def start(self) -> None:
        if self._loop_task is None:
            self._wakeup = asyncio.Event()
            self._loop_task = asyncio.create_task(self._run_loop(), name="engine-step-loop")

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[RequestOutput]:
        if not self._accepting or self._dead_error is not None:
            raise EngineDeadError("the engine is not accepting requests")
        await self.start()
        self.engine.add_request(request_id, prompt_token_ids, params)   # raises before any output
        stream: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        self._streams[request_id] = stream
        self._wake()
        finished = False
        try:
            while True:
                item = await stream.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                # The consumer went away (aclose, cancellation) or the engine died: free everything.
                self._pending_aborts.append(request_id)
                self._wake()

    async def abort(self, request_id: str) -> None:
        self._pending_aborts.append(request_id)
        self._wake()

    def stats(self) -> EngineStats:
        return self.engine.stats()

    async def shutdown(self, graceful: bool = True, timeout_s: float = 30.0) -> None:
        self._accepting = False
        if self._loop_task is None:
            self.engine.runner.shutdown()
            return
        if graceful:
            try:
                await asyncio.wait_for(self._wait_idle(), timeout_s)
            except TimeoutError:
                logger.warning("engine shutdown: in-flight requests did not finish in %.1fs; aborting them", timeout_s)
        self._pending_aborts.extend(self._streams)
        self._pending_aborts.extend(self.engine.unfinished_request_ids())
        self._wake()
        await self._wait_idle()
        self._loop_task.cancel()
        try:
            await self._loop_task
        except asyncio.CancelledError:
            pass
        self.engine.runner.shutdown()

    # --- the loop -----------------------------------------------------------------------------

    async def _wait_idle(self) -> None:
        while self.engine.has_unfinished_requests() or self._pending_aborts:
            if not self.is_running:
                return
            await asyncio.sleep(0.005)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _run_loop(self) -> None:
        assert self._wakeup is not None
        try:
            while True:
                self._apply_aborts()
                if not self.engine.has_unfinished_requests():
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                batch = self.engine.schedule()
                if batch.entries:
                    sampled = await asyncio.to_thread(self.engine.runner.execute, batch)
                    self._apply_aborts()   # postprocess skips what was aborted during the step
                    self._dispatch(self.engine.postprocess(batch, sampled))
                else:
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the runner crashed: fail every stream, accept nothing more
            logger.exception("engine step loop failed")
            self._dead_error = exc
            error = EngineDeadError(f"the engine stopped: {exc!r}")
            for stream in self._streams.values():
                stream.put_nowait(error)

    def _apply_aborts(self) -> None:
        while self._pending_aborts:
            request_id = self._pending_aborts.pop()
            output = self.engine.abort_request(request_id)
            if output is not None:
                self._dispatch([output])

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        for output in outputs:
            stream = self._streams.get(output.request_id)
            if stream is not None:
                stream.put_nowait(output)
