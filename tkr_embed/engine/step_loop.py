"""The engine's step loop, apart from how requests reach it and outputs leave it (the `Port`).

It is the only loop that steps an engine. `ProcessEngine` runs it as the main loop of the server's engine
process (its port: a pipe each way), so the loop shares no GIL with the HTTP layer; `AsyncEngine` runs it in a
thread of the server process (its port: an inbox under a lock, outputs posted to the event loop); the offline
`LLM` and `tkr-embed bench` run it in the caller's thread through `run_to_completion` (its port: a list of
requests in, a callback out).
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import RequestOutput
from tkr_embed.engine.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


@dataclass
class AddRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival: float  # time.monotonic() when the request reached the engine client


@dataclass(frozen=True)
class Abort:
    request_id: str


@dataclass
class Inbox:
    """What reached the loop since it last looked, in the order it arrived. The loop applies it in that order, so
    an abort always finds the add it follows (even one that arrived in the same inbox) and never cancels an add
    that came after it (its request id used again)."""

    items: list[AddRequest | Abort] = field(default_factory=list)

    def add(self, request: AddRequest) -> None:
        self.items.append(request)

    def abort(self, request_id: str) -> None:
        self.items.append(Abort(request_id))


class Port(ABC):
    """The loop's side of the transport. `deliver` takes RequestOutputs and (request_id, exception)
    pairs for requests the engine refused."""

    @abstractmethod
    def take(self) -> Inbox:
        """Requests and aborts that arrived since the last call (without waiting), in arrival order."""

    @abstractmethod
    def wait(self, timeout: float | None) -> None:
        """Block until something arrives (or `timeout` seconds pass); the loop is idle or stalled."""

    @abstractmethod
    def deliver(self, outputs: list) -> None:
        """Hand outputs to the consumers (called only with outputs, or when going idle with none)."""

    @abstractmethod
    def stopping(self) -> bool:
        """True once the loop should end (checked before each step; a step already launched is finished first)."""

    def progress(self, step_in_flight: bool) -> None:
        """The loop made progress: a step was launched with none in flight, or a step's tokens were read.
        `step_in_flight` says whether a step is now on the device. A watchdog takes a step in flight with no
        progress for too long for a hung engine (`ProcessEngine`); the default ignores it."""


class StepLoop:
    """Runs an LLMEngine step after step until the port says stop: take what arrived, schedule and launch a
    step, read its tokens, postprocess.

    With lookahead, decode step N+1 is queued on the device before step N's tokens are read
    (`LLMEngine.plan_lookahead`). Step N's outputs are delivered only once a later step is queued on
    the device: the consumers' work then overlaps the device. `lock` guards every use of the engine
    (the AsyncEngine's event loop reads its stats under the same lock). Once the port says stop, no step is
    launched and the one in flight is finished; every output is delivered before `run` returns.
    """

    def __init__(self, engine: LLMEngine, port: Port, lock: contextlib.AbstractContextManager | None = None) -> None:
        self.engine = engine
        self.port = port
        self.lock = lock if lock is not None else contextlib.nullcontext()

    def run(self) -> None:
        pending: list = []  # outputs not yet delivered
        inflight = None  # a launched step whose tokens are not read yet
        clock = time.perf_counter
        idle_deliver_s = 0.0  # delivered before this step's launch, with nothing on the device
        engine, port = self.engine, self.port
        try:
            while True:
                stopping = port.stopping()
                if stopping and inflight is None:
                    break
                pending += self._apply(port.take())
                if inflight is None:
                    if pending:
                        # The device is idle: what the last step produced leaves before the host prepares the
                        # next step, whose launch (an eager prefill) can take as long as the step itself.
                        begin = clock()
                        outputs, pending = pending, []
                        port.deliver(outputs)
                        idle_deliver_s = clock() - begin
                    with self.lock:  # plan under the lock, launch outside it
                        planned = engine.plan_step() if engine.has_unfinished_requests() else None
                    if planned:
                        port.progress(step_in_flight=True)
                    inflight = engine.launch(*planned) if planned else None
                    if inflight is None:
                        outputs, pending = pending, []
                        port.deliver(outputs)
                        with self.lock:
                            busy = engine.has_unfinished_requests()
                        port.wait(0.001 if busy else None)  # busy: nothing schedulable now (no free blocks)
                        continue
                with self.lock:
                    planned = None if stopping else engine.plan_lookahead(inflight)
                following = engine.launch(*planned, previous=inflight) if planned else None
                # The previous step's outputs leave only now, with a step queued on the device.
                begin = clock()
                if pending:
                    outputs, pending = pending, []
                    port.deliver(outputs)
                delivered = clock()
                sampled = inflight.finish()
                done = clock()
                port.progress(step_in_flight=following is not None)
                # What arrived during the step, in order: postprocess skips what was aborted. An add is applied
                # here too, so that an abort right behind it finds it (and a request never outlives its abort).
                pending += self._apply(port.take())
                with self.lock:
                    pending += engine.postprocess(inflight.batch, sampled, following)
                    engine.step_times.record(
                        schedule=inflight.schedule_s,
                        launch=inflight.launch_s,
                        deliver=delivered - begin + idle_deliver_s,
                        wait=done - delivered,
                        postprocess=clock() - done,
                    )
                inflight = following
                idle_deliver_s = 0.0
        finally:
            if pending:
                port.deliver(pending)

    def _apply(self, inbox: Inbox) -> list:
        """Add the requests and apply the aborts, in arrival order; -> outputs to deliver (refusals as
        (id, exception), an aborted request's final output)."""
        outputs: list = []
        for item in inbox.items:
            if isinstance(item, Abort):
                with self.lock:
                    output = self.engine.abort_request(item.request_id)
                if output is not None:
                    outputs.append(output)
                continue
            try:
                with self.lock:
                    self.engine.add_request(item.request_id, item.prompt_token_ids, item.params, item.arrival)
            except Exception as exc:  # refused (overloaded, duplicate id): the stream raises it
                outputs.append((item.request_id, exc))
        return outputs


class CallerPort(Port):
    """The loop's port for a caller in the loop's own thread (the offline LLM, `tkr-embed bench`): it hands the
    engine the requests as its waiting queue takes them, passes each output to `on_output` as the loop delivers
    it, and says stop once every request has finished. A refused request raises its error."""

    def __init__(
        self, engine: LLMEngine, requests: Iterable[AddRequest], on_output: Callable[[RequestOutput], None]
    ) -> None:
        self.engine = engine
        self.on_output = on_output
        self._pending = deque(requests)

    def take(self) -> Inbox:
        room = self.engine.config.max_waiting - len(self.engine.scheduler.waiting)
        return Inbox([self._pending.popleft() for _ in range(min(room, len(self._pending)))])

    def wait(self, timeout: float | None) -> None:
        if timeout:  # requests wait for KV blocks that running ones hold: they free them as they finish
            time.sleep(timeout)

    def deliver(self, outputs: list) -> None:
        for output in outputs:
            if isinstance(output, tuple):  # (request_id, refusal)
                raise output[1]
            self.on_output(output)

    def stopping(self) -> bool:
        return not self._pending and not self.engine.has_unfinished_requests()


def run_to_completion(
    engine: LLMEngine, requests: Iterable[AddRequest], on_output: Callable[[RequestOutput], None]
) -> None:
    """Serve `requests` to the end in the caller's thread, through the step loop the server runs. On an error
    (or Ctrl-C) every unfinished request is aborted, so the engine is left empty."""
    try:
        StepLoop(engine, CallerPort(engine, requests, on_output)).run()
    except BaseException:
        for request_id in engine.unfinished_request_ids():
            engine.abort_request(request_id)
        raise
