"""AsyncEngine: the step loop in a thread of this process, with per-request asyncio streams and abort."""

from __future__ import annotations

import asyncio
import logging
import threading

from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.errors import EngineDeadError
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import EngineStats
from tkr_embed.engine.runner import ModelRunner, RunnerInfo
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.step_loop import AddRequest, Inbox, Port, StepLoop
from tkr_embed.engine.streams import StreamingEngine
from tkr_embed.engine.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


class AsyncEngine(StreamingEngine):
    """Serves many concurrent `generate()` streams from one LLMEngine.

    One engine thread runs the whole step loop (`StepLoop`: schedule, `runner.launch`, postprocess),
    as the offline `LLM` does, so a step never waits for the event loop. Outputs reach the event loop
    (one `call_soon_threadsafe`) once a later step is queued on the device: their HTTP work then runs
    while the device computes and the engine thread waits without the GIL. The event loop only
    enqueues new requests and aborts (applied by the engine thread in arrival order, between steps
    and before each step's postprocess). The LLMEngine is touched under
    `_state_lock` only. The thread shares the GIL with the event loop; `ProcessEngine` does not.
    """

    def __init__(self, engine: LLMEngine) -> None:
        super().__init__()
        self.engine = engine
        engine.cumulative_outputs = False  # StreamingEngine keeps the sums from the deltas
        self._inbox = Inbox()
        self._inbox_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._work = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

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
        return self._thread is not None and self._thread.is_alive() and self._dead_error is None

    async def start(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name="engine-step-loop", daemon=True)
            self._thread.start()

    def stats(self) -> EngineStats:
        with self._state_lock:
            return self.engine.stats()

    async def shutdown(self, graceful: bool = True, timeout_s: float = 30.0) -> None:
        self._accepting = False
        if self._thread is None:
            self.engine.runner.shutdown()
            return
        if graceful:
            await self._let_in_flight_finish(timeout_s)
        with self._state_lock:
            unfinished = self.engine.unfinished_request_ids()
        for request_id in [*self._streams, *unfinished]:
            self._request_abort(request_id)
        await self._wait_idle()
        await self.stop_loop()
        self.engine.runner.shutdown()

    async def stop_loop(self) -> None:
        """Stop the engine thread after its current step; the runner stays usable (benchmarks share it)."""
        if self._thread is not None:
            self._stop = True
            self._work.set()
            await asyncio.to_thread(self._thread.join)

    # --- StreamingEngine ----------------------------------------------------------------------

    def _validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        self.engine.validate_request(prompt_token_ids, params)

    def _submit(self, request: AddRequest) -> None:
        with self._inbox_lock:
            self._inbox.add(request)
        self._work.set()

    def _request_abort(self, request_id: str) -> None:
        with self._inbox_lock:
            self._inbox.abort(request_id)
        self._work.set()

    # --- the engine thread --------------------------------------------------------------------

    def _busy(self) -> bool:
        with self._inbox_lock:
            queued = bool(self._inbox.items)
        with self._state_lock:
            return queued or self.engine.has_unfinished_requests()

    async def _wait_idle(self) -> None:
        while self._busy():
            if not self.is_running:
                return
            await asyncio.sleep(0.005)

    def _run(self) -> None:
        try:
            StepLoop(self.engine, _ThreadPort(self), self._state_lock).run()
        except BaseException as exc:  # the runner crashed: fail every stream, accept nothing more
            logger.exception("engine step loop failed")
            error = EngineDeadError(f"the engine stopped: {exc!r}")
            self._dead_error = error
            self._post(self._fail_all, error)


class _ThreadPort(Port):
    """The AsyncEngine's inbox and event loop, seen from its engine thread."""

    def __init__(self, owner: AsyncEngine) -> None:
        self.owner = owner

    def take(self) -> Inbox:
        owner = self.owner
        owner._work.clear()
        with owner._inbox_lock:
            inbox, owner._inbox = owner._inbox, Inbox()
        return inbox

    def wait(self, timeout: float | None) -> None:
        self.owner._work.wait(timeout)
        self.owner._work.clear()

    def deliver(self, outputs: list) -> None:
        self.owner._deliver(outputs)

    def stopping(self) -> bool:
        return self.owner._stop
