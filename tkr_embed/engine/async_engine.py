"""AsyncEngine: the step loop in its own thread, with per-request asyncio streams and abort."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator

from tkr_embed.engine.client import EngineClient
from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.errors import EngineDeadError, InvalidRequestError
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import EngineStats, RequestOutput
from tkr_embed.engine.runner import ModelRunner, RunnerInfo
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

_Item = RequestOutput | BaseException


class AsyncEngine(EngineClient):
    """Serves many concurrent `generate()` streams from one LLMEngine.

    One engine thread runs the whole step loop (schedule, `runner.launch`, postprocess), as the
    offline `LLM` does, so a step never waits for the event loop. With lookahead, decode step N+1 is
    queued on the device before step N's tokens are read (`LLMEngine.start_lookahead`). Outputs reach
    the event loop (one `call_soon_threadsafe`) once a later step is queued on the device: their HTTP
    work then runs while the device computes and the engine thread waits without the GIL. The event
    loop only enqueues new requests and aborts (applied by the engine thread between steps; an abort
    that arrives during a step is applied before that step's postprocess). The LLMEngine is touched
    under `_state_lock` only.
    """

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._streams: dict[str, asyncio.Queue[_Item]] = {}
        self._inbox: list[tuple[str, list[int], SamplingParams, float]] = []   # requests to add, with arrival
        self._pending_aborts: list[str] = []
        self._inbox_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._work = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
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
        return self._thread is not None and self._thread.is_alive()

    async def start(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name="engine-step-loop", daemon=True)
            self._thread.start()

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[RequestOutput]:
        if not self._accepting or self._dead_error is not None:
            raise EngineDeadError("the engine is not accepting requests")
        await self.start()
        if request_id in self._streams:
            raise InvalidRequestError(f"request id {request_id!r} is already in use", "request_id")
        self.engine.validate_request(prompt_token_ids, params)   # raises before any output
        stream: asyncio.Queue[_Item] = asyncio.Queue()
        self._streams[request_id] = stream
        with self._inbox_lock:
            self._inbox.append((request_id, list(prompt_token_ids), params, time.monotonic()))
        self._work.set()
        finished = False
        try:
            while True:
                item = await stream.get()
                if isinstance(item, BaseException):
                    finished = True        # never added (refused by the engine) or the engine died
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                # The consumer went away (aclose, cancellation): free everything.
                self._request_abort(request_id)

    async def abort(self, request_id: str) -> None:
        self._request_abort(request_id)

    def stats(self) -> EngineStats:
        with self._state_lock:
            return self.engine.stats()

    async def shutdown(self, graceful: bool = True, timeout_s: float = 30.0) -> None:
        self._accepting = False
        if self._thread is None:
            self.engine.runner.shutdown()
            return
        if graceful:
            try:
                await asyncio.wait_for(self._wait_idle(), timeout_s)
            except TimeoutError:
                logger.warning("engine shutdown: in-flight requests did not finish in %.1fs; aborting them", timeout_s)
        with self._state_lock:
            unfinished = self.engine.unfinished_request_ids()
        for request_id in [*self._streams, *unfinished]:
            self._request_abort(request_id)
        await self._wait_idle()
        self._stop = True
        self._work.set()
        await self.stop_loop()
        self.engine.runner.shutdown()

    async def stop_loop(self) -> None:
        """Stop the engine thread after its current step; the runner stays usable (benchmarks share it)."""
        if self._thread is not None:
            self._stop = True
            self._work.set()
            await asyncio.to_thread(self._thread.join)

    # --- the engine thread --------------------------------------------------------------------

    def _request_abort(self, request_id: str) -> None:
        with self._inbox_lock:
            self._pending_aborts.append(request_id)
        self._work.set()

    def _busy(self) -> bool:
        with self._inbox_lock:
            queued = bool(self._inbox or self._pending_aborts)
        with self._state_lock:
            return queued or self.engine.has_unfinished_requests()

    async def _wait_idle(self) -> None:
        while self._busy():
            if not self.is_running:
                return
            await asyncio.sleep(0.005)

    def _run(self) -> None:
        pending: list = []   # outputs not yet handed to the event loop
        inflight = None      # a launched step whose tokens are not read yet
        clock = time.perf_counter
        try:
            while not self._stop:
                pending += self._take_inbox()
                if inflight is None:
                    with self._state_lock:           # the event loop reads stats: plan under the lock, launch outside
                        planned = self.engine.plan_step() if self.engine.has_unfinished_requests() else None
                    inflight = self.engine.launch(*planned) if planned else None
                    if inflight is None:
                        self._deliver(pending)
                        pending = []
                        with self._state_lock:
                            busy = self.engine.has_unfinished_requests()
                        if busy:                       # nothing schedulable now (e.g. no free blocks)
                            self._work.wait(0.001)
                        else:
                            self._work.wait()          # idle: sleep until a request, an abort or stop
                        self._work.clear()
                        continue
                # With lookahead the next decode step is queued before this one's tokens are read.
                with self._state_lock:
                    planned = self.engine.plan_lookahead(inflight)
                following = self.engine.launch(*planned, previous=inflight) if planned else None
                # The previous step's outputs go to the event loop only now, with a step queued on the
                # device: their HTTP work overlaps the device instead of competing with this thread for
                # the GIL while it builds the step's inputs.
                begin = clock()
                self._deliver(pending)
                delivered = clock()
                sampled = inflight.finish()
                done = clock()
                pending = self._take_aborts()           # postprocess skips what was aborted during the step
                with self._state_lock:
                    pending += self.engine.postprocess(inflight.batch, sampled)
                    self.engine.step_times.record(schedule=inflight.schedule_s, launch=inflight.launch_s,
                                                  deliver=delivered - begin, wait=done - delivered,
                                                  postprocess=clock() - done)
                inflight = following
        except BaseException as exc:  # the runner crashed: fail every stream, accept nothing more
            logger.exception("engine step loop failed")
            self._dead_error = exc
            self._deliver(pending)
            self._post(self._fail_all, EngineDeadError(f"the engine stopped: {exc!r}"))

    def _take_inbox(self) -> list[_Item | tuple[str, BaseException]]:
        """Add the queued requests and apply the queued aborts; -> outputs to deliver."""
        self._work.clear()
        with self._inbox_lock:
            adds, self._inbox = self._inbox, []
        outputs: list = []
        for request_id, prompt, params, arrival in adds:
            try:
                with self._state_lock:
                    self.engine.add_request(request_id, prompt, params, arrival)
            except Exception as exc:   # refused (overloaded, duplicate id): the stream raises it
                outputs.append((request_id, exc))
        return outputs + self._take_aborts()

    def _take_aborts(self) -> list:
        with self._inbox_lock:
            aborts, self._pending_aborts = self._pending_aborts, []
        outputs = []
        for request_id in aborts:
            with self._state_lock:
                output = self.engine.abort_request(request_id)
            if output is not None:
                outputs.append(output)
        return outputs

    def _deliver(self, outputs: list) -> None:
        if outputs:
            self._post(self._dispatch, outputs)

    def _post(self, callback, argument) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(callback, argument)
        except RuntimeError:   # the loop closed in between
            pass

    # --- on the event loop --------------------------------------------------------------------

    def _dispatch(self, outputs: list) -> None:
        for output in outputs:
            if isinstance(output, tuple):
                request_id, item = output
            else:
                request_id, item = output.request_id, output
            stream = self._streams.get(request_id)
            if stream is not None:
                stream.put_nowait(item)

    def _fail_all(self, error: BaseException) -> None:
        for stream in self._streams.values():
            stream.put_nowait(error)
