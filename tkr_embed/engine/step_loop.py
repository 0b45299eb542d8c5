"""The engine's step loop, apart from how requests reach it and outputs leave it (the `Port`).

`AsyncEngine` runs it in a thread of the server process (its port: an inbox under a lock, outputs
posted to the event loop); `ProcessEngine` runs it as the main loop of a child process (its port: a
pipe each way), so the loop shares no GIL with the HTTP layer.
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


@dataclass
class AddRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival: float                   # time.monotonic() when the request reached the engine client


@dataclass
class Inbox:
    """What reached the loop since it last looked."""

    adds: list[AddRequest] = field(default_factory=list)
    aborts: list[str] = field(default_factory=list)


class Port(ABC):
    """The loop's side of the transport. `deliver` takes RequestOutputs and (request_id, exception)
    pairs for requests the engine refused."""

    @abstractmethod
    def take(self) -> Inbox:
        """Requests and aborts that arrived since the last call (without waiting)."""

    @abstractmethod
    def take_aborts(self) -> list[str]:
        """Aborts only (between a step's launch and its postprocess)."""

    @abstractmethod
    def wait(self, timeout: float | None) -> None:
        """Block until something arrives (or `timeout` seconds pass); the loop is idle or stalled."""

    @abstractmethod
    def deliver(self, outputs: list) -> None:
        """Hand outputs to the consumers (called only with outputs, or when going idle with none)."""

    @abstractmethod
    def stopping(self) -> bool:
        """True once the loop should end (checked before each step)."""


class StepLoop:
    """Runs an LLMEngine step after step until the port says stop.

    With lookahead, decode step N+1 is queued on the device before step N's tokens are read
    (`LLMEngine.plan_lookahead`). Step N's outputs are delivered only once a later step is queued on
    the device: the consumers' work then overlaps the device. `lock` guards every use of the engine
    (the AsyncEngine's event loop reads its stats under the same lock).
    """

    def __init__(self, engine: LLMEngine, port: Port, lock: contextlib.AbstractContextManager | None = None) -> None:
        self.engine = engine
        self.port = port
        self.lock = lock if lock is not None else contextlib.nullcontext()

    def run(self) -> None:
        pending: list = []   # outputs not yet delivered
        inflight = None      # a launched step whose tokens are not read yet
        clock = time.perf_counter
        engine, port = self.engine, self.port
        try:
            while not port.stopping():
                pending += self._apply(port.take())
                if inflight is None:
                    with self.lock:           # plan under the lock, launch outside it
                        planned = engine.plan_step() if engine.has_unfinished_requests() else None
                    inflight = engine.launch(*planned) if planned else None
                    if inflight is None:
                        port.deliver(pending)
                        pending = []
                        with self.lock:
                            busy = engine.has_unfinished_requests()
                        port.wait(0.001 if busy else None)   # busy: nothing schedulable now (no free blocks)
                        continue
                with self.lock:
                    planned = engine.plan_lookahead(inflight)
                following = engine.launch(*planned, previous=inflight) if planned else None
                # The previous step's outputs leave only now, with a step queued on the device.
                begin = clock()
                if pending:
                    port.deliver(pending)
                delivered = clock()
                sampled = inflight.finish()
                done = clock()
                pending = self._apply_aborts(port.take_aborts())   # postprocess skips what was aborted
                with self.lock:
                    pending += engine.postprocess(inflight.batch, sampled)
                    engine.step_times.record(schedule=inflight.schedule_s, launch=inflight.launch_s,
                                             deliver=delivered - begin, wait=done - delivered,
                                             postprocess=clock() - done)
                inflight = following
        except BaseException:
            if pending:
                port.deliver(pending)
            raise

    def _apply(self, inbox: Inbox) -> list:
        """Add the requests and apply the aborts; -> outputs to deliver (refusals as (id, exception))."""
        outputs: list = []
        for add in inbox.adds:
            try:
                with self.lock:
                    self.engine.add_request(add.request_id, add.prompt_token_ids, add.params, add.arrival)
            except Exception as exc:   # refused (overloaded, duplicate id): the stream raises it
                outputs.append((add.request_id, exc))
        return outputs + self._apply_aborts(inbox.aborts)

    def _apply_aborts(self, request_ids: list[str]) -> list:
        outputs = []
        for request_id in request_ids:
            with self.lock:
                output = self.engine.abort_request(request_id)
            if output is not None:
                outputs.append(output)
        return outputs
