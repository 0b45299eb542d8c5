"""ProcessEngine: the step loop in a child process, so it shares no GIL with the HTTP layer.

In one process the engine thread gives up the GIL at every torch call and kernel launch, and while
the event loop parses arriving requests or streams chunks it waits for it back each time: a lone
1,024-token prefill launched while 63 more requests arrived took 214 ms instead of 27 on an H100.
Here the child builds the engine (`build`, a picklable zero-argument callable returning an LLMEngine:
`tkr_embed.builder.ProcessBuild`), runs `StepLoop` as its main loop, and talks to this process over
two pipes:

- to the child: ("add", AddRequest), ("abort", request_id), ("stop",); a sender thread writes them,
  so the event loop never blocks on a full pipe while the child computes a step;
- from the child: ("ready", RunnerInfo, limits, EngineStats) once built or ("failed", text);
  ("outputs", updates, EngineStats) after each step, ("stats", EngineStats) when it goes idle,
  ("dead", text) if the loop crashed, ("stopped",). A reader thread posts them to the event loop.

Updates carry only deltas (new token ids and text, finish, logprobs): the prompt and the cumulative
token ids and text are kept here per request and put back into each RequestOutput, which then
reads as the in-process engine's.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from tkr_embed.engine.errors import EngineDeadError
from tkr_embed.engine.llm_engine import LLMEngine, check_request
from tkr_embed.engine.outputs import CompletionOutput, EngineStats, RequestOutput
from tkr_embed.engine.runner import RunnerInfo
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.step_loop import AddRequest, Inbox, Port, StepLoop
from tkr_embed.engine.streams import StreamingEngine

logger = logging.getLogger(__name__)
STOP_TIMEOUT_S = 30.0  # the child's own stop (its runner's shutdown included)
ABORT_TIMEOUT_S = 5.0  # aborted requests' last updates at shutdown


@dataclass(frozen=True)
class _Limits:
    max_model_len: int
    vocab_size: int
    has_tokenizer: bool


class ProcessEngine(StreamingEngine):
    """An EngineClient whose LLMEngine lives in a child process (spawned by `start()`)."""

    def __init__(self, build: Callable[[], LLMEngine]) -> None:
        super().__init__()
        self._build = build
        self._process: multiprocessing.process.BaseProcess | None = None
        self._requests: Connection | None = None
        self._events: Connection | None = None
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._info: RunnerInfo | None = None
        self._limits: _Limits | None = None
        self._stats: EngineStats | None = None
        self._progress: dict[str, tuple[list[int], dict[int, list]]] = {}  # prompt, index -> [token ids, text]
        self._stopping = False
        self._start_lock = asyncio.Lock()

    @property
    def info(self) -> RunnerInfo:
        if self._info is None:
            raise RuntimeError("the engine process is not started")
        return self._info

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.is_alive() and self._dead_error is None

    def stats(self) -> EngineStats:
        if self._stats is None:
            raise RuntimeError("the engine process is not started")
        return self._stats

    async def start(self) -> None:
        """Spawn the child and wait until it has built the engine (raises RuntimeError if it cannot)."""
        async with self._start_lock:
            if self._process is not None:
                return
            self._loop = asyncio.get_running_loop()
            context = multiprocessing.get_context("spawn")
            child_requests, self._requests = context.Pipe(duplex=False)
            self._events, child_events = context.Pipe(duplex=False)
            self._process = context.Process(
                target=serve_engine,
                args=(self._build, child_requests, child_events),
                name="tkr-embed-engine",
                daemon=True,
            )
            self._process.start()
            child_requests.close()
            child_events.close()
            message = await asyncio.to_thread(self._first_message)
            if message[0] != "ready":
                process, self._process = self._process, None
                await asyncio.to_thread(process.join, STOP_TIMEOUT_S)
                raise RuntimeError(f"the engine process could not start: {message[1]}")
            _, self._info, self._limits, self._stats = message
            threading.Thread(target=self._read_events, name="engine-events", daemon=True).start()
            threading.Thread(target=self._write_requests, name="engine-requests", daemon=True).start()

    async def shutdown(self, graceful: bool = True, timeout_s: float = 30.0) -> None:
        self._accepting = False
        if self._process is None:
            return
        if graceful:
            await self._let_in_flight_finish(timeout_s)
        for request_id in list(self._streams):
            self._request_abort(request_id)
        try:
            await asyncio.wait_for(self._wait_idle(consumers=False), ABORT_TIMEOUT_S)
        except TimeoutError:
            logger.warning("engine shutdown: aborted requests did not end in %.1fs", ABORT_TIMEOUT_S)
        self._stopping = True
        self._outbox.put(("stop",))
        self._outbox.put(None)
        await asyncio.to_thread(self._process.join, STOP_TIMEOUT_S)
        if self._process.is_alive():
            logger.warning("the engine process did not stop in %.1fs; terminating it", STOP_TIMEOUT_S)
            self._process.terminate()
            await asyncio.to_thread(self._process.join, 5.0)
        if self._streams:  # nothing will answer them any more
            self._fail_all(EngineDeadError("the engine shut down"))

    async def _wait_idle(self, consumers: bool = True) -> None:
        """Until the child has nothing to run (and, with `consumers`, every stream has been read to its end)."""
        while self.is_running:
            stats = self._stats
            if not (consumers and self._streams) and stats is not None and stats.running + stats.waiting == 0:
                return
            await asyncio.sleep(0.005)

    # --- StreamingEngine ----------------------------------------------------------------------

    def _validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        limits = self._limits
        check_request(prompt_token_ids, params, limits.max_model_len, limits.vocab_size, limits.has_tokenizer)

    def _submit(self, request: AddRequest) -> None:
        self._progress[request.request_id] = (request.prompt_token_ids, {})
        self._outbox.put(("add", request))

    def _request_abort(self, request_id: str) -> None:
        self._outbox.put(("abort", request_id))

    def _dispatch(self, outputs: list) -> None:
        super()._dispatch([self._restore(output) for output in outputs])

    def _restore(self, update):
        """A wire update -> the RequestOutput the in-process engine would have streamed."""
        if isinstance(update, tuple):  # (request_id, refusal)
            self._progress.pop(update[0], None)
            return update
        progress = self._progress.get(update.request_id)
        if progress is None:  # the stream already ended (aborted): nobody reads it
            return update
        prompt, completions = progress
        for completion in update.outputs:
            so_far = completions.setdefault(completion.index, [[], ""])
            so_far[0].extend(completion.new_token_ids)
            so_far[1] += completion.new_text
            completion.token_ids, completion.text = so_far
        update.prompt_token_ids = prompt
        if update.finished:
            del self._progress[update.request_id]
        return update

    def _fail_all(self, error: BaseException) -> None:
        self._progress.clear()
        super()._fail_all(error)

    # --- the threads that talk to the child ---------------------------------------------------

    def _first_message(self) -> tuple:
        try:
            return self._events.recv()
        except (EOFError, OSError):
            return ("failed", f"it exited with code {self._process.exitcode if self._process else None}")

    def _write_requests(self) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                self._requests.send(message)
            except (OSError, ValueError):  # the child is gone: the reader reports it
                return

    def _read_events(self) -> None:
        while True:
            try:
                kind, *body = self._events.recv()
            except (EOFError, OSError):
                if not self._stopping:
                    self._died(
                        "the engine process exited unexpectedly "
                        f"(exit code {self._process.exitcode if self._process else None})"
                    )
                return
            if kind == "outputs":
                self._stats = body[1]
                self._deliver(body[0])
            elif kind == "stats":
                self._stats = body[0]
            elif kind == "dead":
                self._died(f"the engine stopped: {body[0]}")
                return
            elif kind == "stopped":
                return

    def _died(self, reason: str) -> None:
        logger.error("%s", reason)
        error = EngineDeadError(reason)
        self._dead_error = error
        self._post(self._fail_all, error)


# --- the child process ------------------------------------------------------------------------


def serve_engine(build: Callable[[], LLMEngine], requests: Connection, events: Connection) -> None:
    """The child's main: build the engine, report ready, run the step loop until told to stop.

    Ctrl-C reaches the whole process group: the child ignores it and stops when the server says so."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        engine = build()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        logger.exception("the engine could not be built")
        events.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    limits = _Limits(engine.max_model_len, engine.vocab_size, engine.tokenizer is not None)
    events.send(("ready", engine.runner.info, limits, engine.stats()))
    try:
        StepLoop(engine, _PipePort(engine, requests, events)).run()
    except BaseException as exc:  # noqa: BLE001 - the parent fails every stream with it
        logger.exception("engine step loop failed")
        events.send(("dead", repr(exc)))
        return
    finally:
        engine.runner.shutdown()
    try:
        events.send(("stopped",))
    except OSError:  # the server is gone already
        pass


def _wire(output):
    """Only what changed: the parent keeps the prompt and the cumulative token ids and text."""
    if isinstance(output, tuple):
        return output
    return RequestOutput(
        request_id=output.request_id,
        prompt_token_ids=[],
        finished=output.finished,
        num_cached_prompt_tokens=output.num_cached_prompt_tokens,
        timings=output.timings,
        outputs=[
            CompletionOutput(
                index=c.index,
                new_token_ids=c.new_token_ids,
                token_ids=[],
                new_text=c.new_text,
                text="",
                finish_reason=c.finish_reason,
                stop_reason=c.stop_reason,
                new_logprobs=c.new_logprobs,
            )
            for c in output.outputs
        ],
    )


class _PipePort(Port):
    """The step loop's side of the two pipes."""

    def __init__(self, engine: LLMEngine, requests: Connection, events: Connection) -> None:
        self.engine = engine
        self.requests = requests
        self.events = events
        self._held = Inbox()  # adds read while only aborts were wanted
        self._stop = False

    def _drain(self) -> None:
        while not self._stop and self.requests.poll():
            try:
                kind, *body = self.requests.recv()
            except (EOFError, OSError):  # the parent is gone
                self._stop = True
                return
            if kind == "add":
                self._held.adds.append(body[0])
            elif kind == "abort":
                self._held.aborts.append(body[0])
            elif kind == "stop":
                self._stop = True

    def take(self) -> Inbox:
        self._drain()
        inbox, self._held = self._held, Inbox()
        return inbox

    def take_aborts(self) -> list[str]:
        self._drain()
        aborts, self._held.aborts = self._held.aborts, []
        return aborts

    def wait(self, timeout: float | None) -> None:
        if timeout is None:
            self.events.send(("stats", self.engine.stats()))
        if not self._stop:
            self.requests.poll(timeout)

    def deliver(self, outputs: list) -> None:
        if outputs:
            self.events.send(("outputs", [_wire(output) for output in outputs], self.engine.stats()))

    def stopping(self) -> bool:
        return self._stop
