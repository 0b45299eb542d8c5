"""The engine process's side of `ProcessEngine`: build the engine, then run the step loop over two pipes.

- from the server: ("add", AddRequest), ("abort", request_id), ("stop",);
- to the server: ("ready", RunnerInfo, EngineLimits, EngineStats) once built or ("failed", text);
  ("outputs", updates (`wire`), EngineStats) after each step, ("stats", EngineStats) when it goes idle,
  ("dead", text) if the loop crashed, ("stopped",).

Beside the pipes the loop writes, into memory shared with the server (`step_clock`), the time.monotonic() of
its last progress while a step is on the device (0.0 while none is): the server's watchdog reads it, so a
step that hangs is seen even when the hang holds this process's GIL.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import CompletionOutput, RequestOutput, RequestTimings
from tkr_embed.engine.step_loop import Inbox, Port, StepLoop

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineLimits:
    """What the server checks a request against before sending it (`check_request`)."""

    max_model_len: int
    vocab_size: int
    has_tokenizer: bool


def serve_engine(build: Callable[[], LLMEngine], requests: Connection, events: Connection, step_clock) -> None:
    """The child's main: build the engine, report ready, run the step loop until told to stop.

    `step_clock`: a shared double (multiprocessing.RawValue("d")). Ctrl-C, and a SIGTERM sent to the whole process
    group (systemd, `timeout`, `kill -- -PGID`), reach the child too: it ignores both and stops when the server says
    so, after the server's drain. A server that dies closes the pipes, which stops the child as well."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        engine = build()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        logger.exception("the engine could not be built")
        events.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    engine.cumulative_outputs = False  # `wire` sends the deltas only: the parent keeps the sums
    limits = EngineLimits(engine.max_model_len, engine.vocab_size, engine.tokenizer is not None)
    events.send(("ready", engine.runner.info, limits, engine.stats()))
    try:
        StepLoop(engine, PipePort(engine, requests, events, step_clock)).run()
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


def wire(output):
    """An update as plain tuples, with only what changed (tuples pickle about ten times faster than the dataclasses,
    and the server unpickles them on its event loop's GIL); a refusal, (request_id, error), as it is. The parent
    keeps the prompt and the cumulative token ids and text, and rebuilds the update (`unwire`)."""
    if isinstance(output, tuple):
        return output
    timings = output.timings
    return (
        output.request_id,
        output.finished,
        output.num_cached_prompt_tokens,
        (timings.arrival, timings.scheduled, timings.first_token, timings.finished),
        output.prompt_logprobs,  # in one update only
        [
            (c.index, c.new_token_ids, c.new_text, c.finish_reason, c.stop_reason, c.new_logprobs)
            for c in output.outputs
        ],
    )


def unwire(update: tuple) -> RequestOutput:
    """A `wire` update -> the RequestOutput it came from, with the prompt and the cumulative fields left empty."""
    request_id, finished, num_cached, timings, prompt_logprobs, completions = update
    return RequestOutput(
        request_id=request_id,
        prompt_token_ids=[],
        finished=finished,
        num_cached_prompt_tokens=num_cached,
        timings=RequestTimings(*timings),
        prompt_logprobs=prompt_logprobs,
        outputs=[
            CompletionOutput(
                index=index,
                new_token_ids=new_token_ids,
                token_ids=[],
                new_text=new_text,
                text="",
                finish_reason=finish_reason,
                stop_reason=stop_reason,
                new_logprobs=new_logprobs,
            )
            for index, new_token_ids, new_text, finish_reason, stop_reason, new_logprobs in completions
        ],
    )


class PipePort(Port):
    """The step loop's side of the two pipes (and of the shared step clock, when given)."""

    def __init__(self, engine: LLMEngine, requests: Connection, events: Connection, step_clock=None) -> None:
        self.engine = engine
        self.requests = requests
        self.events = events
        self.step_clock = step_clock
        self._stop = False

    def take(self) -> Inbox:
        inbox = Inbox()
        while not self._stop and self.requests.poll():
            try:
                kind, *body = self.requests.recv()
            except (EOFError, OSError):  # the parent is gone
                self._stop = True
                break
            if kind == "add":
                inbox.add(body[0])
            elif kind == "abort":
                inbox.abort(body[0])
            elif kind == "stop":
                self._stop = True
        return inbox

    def wait(self, timeout: float | None) -> None:
        if timeout is None:
            self.events.send(("stats", self.engine.stats()))
        if not self._stop:
            self.requests.poll(timeout)

    def deliver(self, outputs: list) -> None:
        if outputs:
            self.events.send(("outputs", [wire(output) for output in outputs], self.engine.stats()))

    def progress(self, step_in_flight: bool) -> None:
        if self.step_clock is not None:
            self.step_clock.value = time.monotonic() if step_in_flight else 0.0

    def stopping(self) -> bool:
        return self._stop
