"""Request and sequence state: what the scheduler moves between queues (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from tkr_embed.engine.constraints import FREE_FOREVER, ConstraintState, PendingMask, advance_states
from tkr_embed.engine.detokenizer import IncrementalDetokenizer
from tkr_embed.engine.outputs import (
    CompletionOutput,
    FinishReason,
    RequestOutput,
    RequestTimings,
    TokenLogprob,
)
from tkr_embed.engine.runner import PromptLogprobs, SampledToken
from tkr_embed.engine.sampling_params import SamplingParams


class SequenceStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One completion of a request: its tokens, KV block table and output state.

    Invariants: `num_computed_tokens <= len(all_token_ids)`; the block table covers at least
    `num_computed_tokens` slots; `block_hashes[i]` is the prefix-cache hash of the full block
    `block_table[i]` for every `i < len(block_hashes)`.
    """

    seq_id: int
    index: int
    request: Request
    sampling: SamplingParams
    all_token_ids: list[int]
    num_prompt_tokens: int
    detokenizer: IncrementalDetokenizer | None = None
    status: SequenceStatus = SequenceStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    # what the next update of the stream carries for this completion
    new_token_ids: list[int] = field(default_factory=list)
    new_text: str = ""
    new_logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_tuple: tuple[int, ...] = field(init=False)
    # this completion's progress through `sampling.constraint`; None when unconstrained or free from now on
    constraint_state: ConstraintState | None = field(init=False)
    _constraint_ahead: bool = field(default=False, init=False)  # the state took the token append_token adds next

    def __post_init__(self) -> None:
        self.prompt_tuple = tuple(self.all_token_ids[: self.num_prompt_tokens])
        constraint = self.sampling.constraint
        self.constraint_state = constraint.start() if constraint is not None else None

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.all_token_ids[: self.num_prompt_tokens]

    @property
    def output_token_ids(self) -> list[int]:
        return self.all_token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.all_token_ids) - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def wants_prompt_logprobs(self) -> bool:
        """This sequence's prefill scores the prompt: the request's first completion, until it has."""
        return self.index == 0 and self.request.wants_prompt_logprobs

    @property
    def text(self) -> str:
        return self.detokenizer.text if self.detokenizer is not None else ""

    def free_tokens_ahead(self) -> int:
        """How many of the next tokens are free under this completion's constraint (FREE_FOREVER: no constraint)."""
        state = self.constraint_state
        if state is None:
            return FREE_FOREVER
        free = state.free_tokens_ahead()
        if free >= FREE_FOREVER:
            self.constraint_state = None  # a constraint that lets everything through for good is dropped
        return free

    def pending_mask(self) -> PendingMask | None:
        """The next token's allowed ids, to be resolved by the sampler; None when the next token is free."""
        if self.free_tokens_ahead() > 0:
            return None
        return PendingMask(self.constraint_state)

    def constraint_advance(self, token_id: int) -> tuple[ConstraintState, int] | None:
        """The constraint state and the token `append_token` is about to add, for the state to take ahead of the
        rest of the step's bookkeeping (so the next mask can be resolved meanwhile) with the step's other states
        (`advance_states`); None when there is no state or it took the token already."""
        if self.constraint_state is None or self._constraint_ahead:
            return None
        return self.constraint_state, token_id

    def mark_constraint_ahead(self) -> None:
        """The state took `constraint_advance`'s token: `append_token` does not give it again."""
        self._constraint_ahead = True

    def append_token(self, sampled: SampledToken, eos_token_ids: tuple[int, ...], max_model_len: int) -> None:
        """Add a sampled token and decide whether this completion is done."""
        token_id = sampled.token_id
        self.all_token_ids.append(token_id)
        self.new_token_ids.append(token_id)
        if self._constraint_ahead:
            self._constraint_ahead = False
        elif self.constraint_state is not None:
            advance_states([(self.constraint_state, token_id)])
        if self.sampling.logprobs is not None and sampled.logprob is not None:
            self.new_logprobs.append(TokenLogprob(token_id, sampled.logprob, list(sampled.top_logprobs or [])))
        if not self.sampling.ignore_eos and token_id in eos_token_ids:
            self.finish(FinishReason.STOP)
            return
        if token_id in self.sampling.stop_token_ids:
            self.finish(FinishReason.STOP, token_id)
            return
        if self.detokenizer is not None:
            delta = self.detokenizer.add_token(token_id)
            self.new_text += delta.new_text
            if delta.stop_string is not None:
                self.finish(FinishReason.STOP, delta.stop_string)
                return
        max_tokens = self.sampling.max_tokens
        if (max_tokens is not None and self.num_output_tokens >= max_tokens) or self.num_tokens >= max_model_len:
            self.finish(FinishReason.LENGTH)

    def finish(self, reason: FinishReason, stop_reason: str | int | None = None) -> None:
        """Mark finished and flush the held-back text (a matched stop string was already cut)."""
        self.status = SequenceStatus.FINISHED
        self.finish_reason = reason
        self.stop_reason = stop_reason
        if self.detokenizer is not None and not self.detokenizer.stopped:
            self.new_text += self.detokenizer.finish().new_text

    def take_update(self, cumulative: bool = True) -> CompletionOutput:
        """The completion as of now, with the deltas since the previous update (then cleared). `cumulative` False:
        the deltas only (`token_ids` and `text` empty), for a consumer that keeps its own sums."""
        output = CompletionOutput(
            index=self.index,
            new_token_ids=self.new_token_ids,
            token_ids=self.output_token_ids if cumulative else [],
            new_text=self.new_text,
            text=self.text if cumulative and self.finish_reason is not None else "",
            finish_reason=self.finish_reason,
            stop_reason=self.stop_reason,
            new_logprobs=self.new_logprobs if self.sampling.logprobs is not None else None,
        )
        self.new_token_ids, self.new_text, self.new_logprobs = [], "", []
        return output


@dataclass(eq=False)
class Request:
    """A submitted request: one prompt, `n` sequences (completions) sharing its prefix."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    timings: RequestTimings
    seqs: list[Sequence] = field(default_factory=list)
    num_cached_prompt_tokens: int = 0
    # filled by position while the first completion prefills; a recomputed chunk overwrites its positions
    prompt_logprobs: list[TokenLogprob | None] | None = None
    prompt_scored: bool = False  # every prompt position computed (prompt_logprobs complete)
    prompt_logprobs_sent: bool = False

    @property
    def is_finished(self) -> bool:
        return all(seq.is_finished for seq in self.seqs)

    @property
    def wants_prompt_logprobs(self) -> bool:
        return self.params.prompt_logprobs is not None and not self.prompt_scored

    def record_prompt_logprobs(self, scored: PromptLogprobs) -> None:
        """Keep one chunk's prompt-token scores at their positions."""
        if self.prompt_logprobs is None:
            self.prompt_logprobs = [None] * len(self.prompt_token_ids)
        for offset, (logprob, top) in enumerate(zip(scored.token_logprobs, scored.top_logprobs, strict=True)):
            pos = scored.first_pos + offset
            self.prompt_logprobs[pos] = TokenLogprob(self.prompt_token_ids[pos], logprob, top)

    def finish_prompt_scoring(self) -> None:
        """The first completion computed the whole prompt: its scores are complete, to be sent once."""
        if self.prompt_logprobs is None:
            self.prompt_logprobs = [None] * len(self.prompt_token_ids)  # a one-token prompt scores nothing
        self.prompt_scored = True

    def take_output(self, cumulative: bool = True) -> RequestOutput:
        """One stream update covering every completion (deltas empty where nothing changed); `cumulative`: see
        `Sequence.take_update`."""
        prompt_logprobs = None
        if self.prompt_scored and not self.prompt_logprobs_sent:
            prompt_logprobs, self.prompt_logprobs_sent = self.prompt_logprobs, True
        return RequestOutput(
            request_id=self.request_id,
            prompt_token_ids=self.prompt_token_ids,
            outputs=[seq.take_update(cumulative) for seq in self.seqs],
            finished=self.is_finished,
            num_cached_prompt_tokens=self.num_cached_prompt_tokens,
            timings=self.timings,
            prompt_logprobs=prompt_logprobs,
        )
