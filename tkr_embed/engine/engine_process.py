"""ProcessEngine: the step loop in a child process, so it shares no GIL with the HTTP layer.

In one process the engine thread gives up the GIL at every torch call and kernel launch, and while
the event loop parses arriving requests or streams chunks it waits for it back each time: a lone
1,024-token prefill launched while 63 more requests arrived took 214 ms instead of 27 on an H100.
Here the child builds the engine (`build`, a picklable zero-argument callable returning an LLMEngine:
`tkr_embed.builder.ProcessBuild`), runs `StepLoop` as its main loop (`engine_child.serve_engine`), and
talks to this process over two pipes. A sender thread writes requests and aborts, in the order they were
made, so the event loop never blocks on a full pipe while the child computes a step; a reader thread posts
the child's outputs to the event loop.

Updates carry only deltas (new token ids and text, finish, logprobs, the prompt logprobs once), as plain tuples
(`unwire` makes them RequestOutputs again); `StreamingEngine` puts the cumulative fields back.

Supervision: the reader sees the events pipe close the moment the child dies (SIGKILL included), and it
kills a child whose step makes no progress for `step_timeout_s` (the child's step clock, in shared
memory). Either way every open stream fails at once with EngineDeadError, `is_running` turns False,
`dead_reason` says why, and `restart()` builds a new child with the same `build`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from tkr_embed.engine.engine_child import EngineLimits, serve_engine, unwire
from tkr_embed.engine.errors import EngineDeadError
from tkr_embed.engine.llm_engine import LLMEngine, check_request
from tkr_embed.engine.outputs import EngineStats
from tkr_embed.engine.runner import RunnerInfo
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.step_loop import AddRequest
from tkr_embed.engine.streams import StreamingEngine

logger = logging.getLogger(__name__)
STOP_TIMEOUT_S = 30.0  # the child's own stop (its runner's shutdown included)
ABORT_TIMEOUT_S = 5.0  # aborted requests' last updates at shutdown
WATCH_INTERVAL_S = 0.5  # how often the reader looks at the step clock while the child sends nothing


@dataclass
class _Child:
    """One engine process and what talks to it; a restart replaces all of it."""

    process: multiprocessing.process.BaseProcess
    requests: Connection  # our end of the pipe to the child
    events: Connection  # our end of the pipe from the child
    step_clock: Any  # a shared double: when the child's loop last progressed with a step in flight, 0.0 if none
    outbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)


class ProcessEngine(StreamingEngine):
    """An EngineClient whose LLMEngine lives in a child process (spawned by `start()`).

    `step_timeout_s`: a step in flight that makes no progress for this long is taken for a hung engine (the
    child is killed and the engine is dead); None turns the watchdog off."""

    def __init__(self, build: Callable[[], LLMEngine], step_timeout_s: float | None = 60.0) -> None:
        super().__init__()
        self._build = build
        self.step_timeout_s = step_timeout_s
        self._child: _Child | None = None
        self._child_lock = threading.Lock()  # the reader's death report against a restart's swap
        self._info: RunnerInfo | None = None
        self._limits: EngineLimits | None = None
        self._stats: EngineStats | None = None
        self._stopping = False
        self._start_lock = asyncio.Lock()

    @property
    def info(self) -> RunnerInfo:
        if self._info is None:
            raise RuntimeError("the engine process is not started")
        return self._info

    @property
    def _process(self) -> multiprocessing.process.BaseProcess | None:
        return self._child.process if self._child is not None else None

    @property
    def is_running(self) -> bool:
        child = self._child
        return child is not None and child.process.is_alive() and self._dead_error is None

    def stats(self) -> EngineStats:
        if self._stats is None:
            raise RuntimeError("the engine process is not started")
        return self._stats

    async def start(self) -> None:
        """Spawn the child and wait until it has built the engine (raises RuntimeError if it cannot)."""
        async with self._start_lock:
            if self._child is None:
                await self._spawn()

    async def restart(self) -> None:
        """A new engine process built by the same callable, in place of a dead one (a live one is killed first).
        Streams still open fail with EngineDeadError, and new requests are refused until the new process is
        ready. Raises EngineDeadError (and `dead_reason` says why) if the engine was shut down or the new process
        cannot start."""
        async with self._start_lock:
            if not self._accepting:
                raise EngineDeadError("the engine was shut down")
            with self._child_lock:
                old, self._child = self._child, None
                error = self._dead_error or EngineDeadError("the engine is restarting")
                self._dead_error = error
            if old is not None:
                old.outbox.put(None)
                if old.process.is_alive():
                    old.process.kill()
                await asyncio.to_thread(old.process.join, STOP_TIMEOUT_S)
            self._fail_all(error)
            logger.warning("restarting the engine process (%s)", error)
            try:
                await self._spawn()
            except RuntimeError as exc:
                self._dead_error = EngineDeadError(f"the engine could not restart: {exc}")
                raise self._dead_error from exc
            self._dead_error = None
            logger.warning("the engine process is running again")

    async def shutdown(self, graceful: bool = True, timeout_s: float = 30.0) -> None:
        self._accepting = False
        child = self._child
        if child is None:
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
        child.outbox.put(("stop",))
        child.outbox.put(None)
        await asyncio.to_thread(child.process.join, STOP_TIMEOUT_S)
        if child.process.is_alive():
            logger.warning("the engine process did not stop in %.1fs; killing it", STOP_TIMEOUT_S)
            child.process.kill()  # it ignores SIGTERM (engine_child.serve_engine)
            await asyncio.to_thread(child.process.join, 5.0)
        if self._streams:  # nothing will answer them any more
            self._fail_all(EngineDeadError("the engine shut down"))

    async def _wait_idle(self, consumers: bool = True) -> None:
        """Until the child has nothing to run (and, with `consumers`, every stream has been read to its end)."""
        while self.is_running:
            stats = self._stats
            if not (consumers and self._streams) and stats is not None and stats.running + stats.waiting == 0:
                return
            await asyncio.sleep(0.005)

    async def _spawn(self) -> None:
        self._loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")
        child_requests, requests = context.Pipe(duplex=False)
        events, child_events = context.Pipe(duplex=False)
        step_clock = context.RawValue("d", 0.0)
        process = context.Process(
            target=serve_engine,
            args=(self._build, child_requests, child_events, step_clock),
            name="tkr-embed-engine",
            daemon=True,
        )
        process.start()
        child_requests.close()  # the child's ends: once it exits, our ends read EOF
        child_events.close()
        child = _Child(process, requests, events, step_clock)
        message = await asyncio.to_thread(_first_message, child)
        if message[0] != "ready":
            await asyncio.to_thread(process.join, STOP_TIMEOUT_S)
            requests.close()
            events.close()
            raise RuntimeError(f"the engine process could not start: {message[1]}")
        _, self._info, self._limits, self._stats = message
        self._child = child
        threading.Thread(target=self._read_events, args=(child,), name="engine-events", daemon=True).start()
        threading.Thread(target=_write_requests, args=(child,), name="engine-requests", daemon=True).start()

    # --- StreamingEngine ----------------------------------------------------------------------

    def _validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        limits = self._limits
        check_request(prompt_token_ids, params, limits.max_model_len, limits.vocab_size, limits.has_tokenizer)

    def _submit(self, request: AddRequest) -> None:
        self._send(("add", request))

    def _request_abort(self, request_id: str) -> None:
        self._send(("abort", request_id))

    def _send(self, message: tuple) -> None:
        child = self._child
        if child is not None:  # none: dead and restarting, the streams fail instead
            child.outbox.put(message)

    def _dispatch(self, outputs: list) -> None:
        # a refusal, (request_id, error), comes as it is
        super()._dispatch([update if len(update) == 2 else unwire(update) for update in outputs])

    # --- the reader thread --------------------------------------------------------------------

    def _read_events(self, child: _Child) -> None:
        interval = None if self.step_timeout_s is None else min(WATCH_INTERVAL_S, self.step_timeout_s / 4)
        try:
            while True:
                if not child.events.poll(interval):
                    if (hang := self._hang(child)) is not None:
                        child.process.kill()
                        self._died(child, hang)
                        return
                    continue
                kind, *body = child.events.recv()
                if kind == "outputs":
                    self._stats = body[1]
                    self._deliver(body[0])
                elif kind == "stats":
                    self._stats = body[0]
                elif kind == "dead":
                    self._died(child, f"the engine stopped: {body[0]}")
                    return
                elif kind == "stopped":
                    return
        except (EOFError, OSError):
            if not self._stopping:
                self._died(child, f"the engine process exited unexpectedly ({_exit_status(child.process)})")
        finally:
            child.outbox.put(None)  # ends the sender
            child.events.close()

    def _hang(self, child: _Child) -> str | None:
        """Why the child counts as hung: a step in flight without progress for longer than step_timeout_s."""
        since = child.step_clock.value
        if not since or self.step_timeout_s is None:
            return None
        stalled = time.monotonic() - since
        if stalled <= self.step_timeout_s:
            return None
        return (
            f"an engine step made no progress for {stalled:.1f} s (the limit, engine.step_timeout_s, is "
            f"{self.step_timeout_s:g} s); the engine process was killed"
        )

    def _died(self, child: _Child, reason: str) -> None:
        with self._child_lock:
            if child is not self._child or self._stopping:  # replaced by a restart, or being shut down
                return
            error = EngineDeadError(reason)
            self._dead_error = error
        logger.error("%s", reason)
        self._post(self._fail_dead, error)

    def _fail_dead(self, error: EngineDeadError) -> None:
        if self._dead_error is error:  # a restart has not already failed them (and opened new ones)
            self._fail_all(error)


def _first_message(child: _Child) -> tuple:
    try:
        return child.events.recv()
    except (EOFError, OSError):
        return ("failed", f"it exited ({_exit_status(child.process)})")


def _write_requests(child: _Child) -> None:
    try:
        while (message := child.outbox.get()) is not None:
            child.requests.send(message)
    except (OSError, ValueError):  # the child is gone: the reader reports it
        pass
    finally:
        child.requests.close()


def _exit_status(process: multiprocessing.process.BaseProcess) -> str:
    process.join(2.0)  # the pipe closes as the process ends: its exit code follows at once
    code = process.exitcode
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
