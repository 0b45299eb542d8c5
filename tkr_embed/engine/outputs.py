"""What the engine streams back for a request (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class FinishReason(str, Enum):
    STOP = "stop"  # EOS / stop token / stop string
    LENGTH = "length"  # max_tokens or the context limit
    ABORT = "abort"  # aborted by the caller or at shutdown


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top_logprobs: list[tuple[int, float]] = field(default_factory=list)


def joined_text(pieces: list[str]) -> str:
    """A text kept as pieces, joined (then kept as one piece, so joining it again costs nothing): adding each
    token's text to one string would copy the whole string for every token, quadratic in a long completion."""
    if len(pieces) > 1:
        pieces[:] = ["".join(pieces)]
    return pieces[0] if pieces else ""


@dataclass
class CompletionOutput:
    """One of the n completions of a request, as of this update.

    `new_token_ids` / `new_text` are the delta since the previous update for this index; `token_ids` is
    cumulative, and so is `text` once the completion has finished (`finish_reason` set): before, it is empty, since
    building the whole text again for every update costs a long completion time quadratic in its length (the
    deltas, joined, give it). `stop_reason` is the stop string or stop token id that ended it, if any.
    """

    index: int
    new_token_ids: list[int]
    token_ids: list[int]
    new_text: str
    text: str
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    new_logprobs: list[TokenLogprob] | None = None

    def followed_by(self, later: CompletionOutput) -> CompletionOutput:
        """The two deltas as one (see `RequestOutput.followed_by`)."""
        logprobs = None
        if self.new_logprobs is not None or later.new_logprobs is not None:
            logprobs = (self.new_logprobs or []) + (later.new_logprobs or [])
        return CompletionOutput(
            index=self.index,
            new_token_ids=self.new_token_ids + later.new_token_ids,
            token_ids=later.token_ids,
            new_text=self.new_text + later.new_text,
            text=later.text,
            finish_reason=later.finish_reason if later.finish_reason is not None else self.finish_reason,
            stop_reason=later.stop_reason if later.stop_reason is not None else self.stop_reason,
            new_logprobs=logprobs,
        )


@dataclass
class RequestTimings:
    arrival: float  # time.monotonic() at submit
    scheduled: float | None = None  # first time it got into a batch
    first_token: float | None = None
    finished: float | None = None


@dataclass
class RequestOutput:
    """One update of a request's stream; the last one has `finished=True`.

    `prompt_logprobs` (asked for with `SamplingParams.prompt_logprobs`) comes once, in the request's first
    update: one entry per prompt token, None for the first (nothing predicts it), else the token's logprob
    given the tokens before it and the top alternatives at its position. None in every other update.
    """

    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_prompt_tokens: int
    timings: RequestTimings
    prompt_logprobs: list[TokenLogprob | None] | None = None

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_completion_tokens(self) -> int:
        return sum(len(o.token_ids) for o in self.outputs)

    def followed_by(self, later: RequestOutput) -> RequestOutput:
        """This update and the next one of the same request as one update: the deltas concatenated, the
        cumulative fields and the state (finished, timings) as of `later`. A consumer that fell behind reads
        its queued updates this way, once, instead of paying per update."""
        merged = {output.index: output for output in self.outputs}
        for output in later.outputs:
            earlier = merged.get(output.index)
            merged[output.index] = output if earlier is None else earlier.followed_by(output)
        return RequestOutput(
            request_id=self.request_id,
            prompt_token_ids=later.prompt_token_ids,
            outputs=[merged[index] for index in sorted(merged)],
            finished=later.finished,
            num_cached_prompt_tokens=later.num_cached_prompt_tokens,
            timings=later.timings,
            prompt_logprobs=self.prompt_logprobs if self.prompt_logprobs is not None else later.prompt_logprobs,
        )


# Where the engine loop's time goes in a step: choosing the batch, queueing the forward (input
# building), waiting for the device and sampling, turning tokens into outputs, handing the outputs to
# the event loop (the async engine only).
STEP_PHASES = ("schedule", "launch", "wait", "postprocess", "deliver")


class StepPhaseTimes:
    """Seconds spent in each STEP_PHASES phase, summed over the steps run (written by the step loop)."""

    def __init__(self) -> None:
        self.steps = 0
        self.seconds = dict.fromkeys(STEP_PHASES, 0.0)

    def record(self, **phases: float) -> None:
        """One step's phase durations (seconds), e.g. record(schedule=..., launch=..., ...)."""
        self.steps += 1
        for phase, seconds in phases.items():
            self.seconds[phase] += seconds


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_blocks_free: int
    prefix_cache_queries: int  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int  # of which found cached
    prompt_tokens_prefilled: int  # prompt tokens actually computed
    tokens_decoded: int
    requests_finished: int
    preemptions: int
    steps: int = 0  # engine steps run
    step_phase_seconds: dict[str, float] = field(default_factory=dict)  # STEP_PHASES -> seconds, summed
    finish_reasons: dict[str, int] = field(default_factory=dict)  # completions finished, by FinishReason value
    # Which engine counted: a restarted engine (a new process) counts from zero again under a new id
    engine_id: str = ""

    @property
    def kv_usage(self) -> float:
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else 0.0
