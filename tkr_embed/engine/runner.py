"""The backend-neutral runner contract: what the engine asks of a model backend.

The engine schedules; a runner computes. A runner owns the model weights and the paged KV cache
(`num_kv_blocks` blocks of `block_size` token slots each, shared by every layer) and, for one
scheduled batch, runs one forward pass over all its tokens, samples one token for every entry
that asks for it and scores the prompt tokens of every entry that asks for prompt logprobs.
Backends: `tkr_embed.backends.torch` (CPU reference, CUDA) and `tkr_embed.backends.mlx`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from tkr_embed.engine.constraints import PendingMask
from tkr_embed.engine.sampling_params import SamplingParams


@dataclass(frozen=True)
class BatchEntry:
    """One sequence's share of a step.

    Invariants: `len(token_ids) >= 1`; the tokens sit at positions
    `start_pos .. start_pos + len(token_ids) - 1`; `block_table` covers at least
    `start_pos + len(token_ids)` slots; the KV of positions `< start_pos` is already in the cache.
    `prompt_logprobs` is set only on a prefill chunk whose positions predict prompt tokens
    (`prompt_logprob_targets` is not empty), and `prompt_token_ids` then holds the whole prompt.
    """

    seq_id: int
    token_ids: list[int]  # tokens to compute now: a prefill chunk, or the one decode token
    start_pos: int  # number of tokens of this sequence already in the KV cache
    block_table: list[int]  # KV block ids, in order; slot of position p = block_table[p // B] * B + p % B
    sample: bool  # True on decode and on the last prefill chunk: sample one token
    sampling: SamplingParams | None = None  # required when sample is True
    prompt_token_ids: tuple[int, ...] = ()  # for the repetition penalty and the prompt logprobs' targets
    output_token_ids: tuple[int, ...] = ()  # tokens generated so far (penalties; seeded RNG step)
    allowed_tokens: PendingMask | None = None  # the only ids the sampled token may take (None: any)
    prompt_logprobs: int | None = None  # score the prompt tokens this chunk predicts, with the top k
    # False on a lookahead step's entry: its output_token_ids lack the token the step before samples, which
    # only the runner's device knows (`ModelRunner.follows_penalties`)
    history_on_host: bool = True

    @property
    def prompt_logprob_targets(self) -> tuple[int, ...]:
        """The prompt tokens this chunk's positions predict (position p's logits score token p + 1): the
        chunk's last position scores the next chunk's first token; the prompt's last position scores none."""
        if self.prompt_logprobs is None:
            return ()
        return self.prompt_token_ids[self.start_pos + 1 : self.start_pos + len(self.token_ids) + 1]

    @property
    def is_prefill(self) -> bool:
        return len(self.token_ids) > 1 or self.start_pos < len(self.prompt_token_ids)


@dataclass(frozen=True)
class ScheduledBatch:
    """What one engine step computes: prefill chunks and decodes, mixed."""

    entries: list[BatchEntry]

    @property
    def num_tokens(self) -> int:
        return sum(len(e.token_ids) for e in self.entries)


@dataclass(frozen=True)
class SampledToken:
    """The token sampled for one entry, with its logprob information when asked for."""

    seq_id: int
    token_id: int
    logprob: float | None = None  # log-softmax of the chosen token (raw logits)
    top_logprobs: list[tuple[int, float]] | None = None  # (token id, logprob), best first


@dataclass(frozen=True)
class PromptLogprobs:
    """The scores of the prompt tokens one entry predicts (its `prompt_logprob_targets`), in order: the
    first is the token at position `first_pos` (the entry's `start_pos + 1`). Log-softmax of raw logits."""

    seq_id: int
    first_pos: int
    token_logprobs: list[float]  # each target token's logprob
    top_logprobs: list[list[tuple[int, float]]]  # per target: the top k (token id, logprob), best first


@dataclass(frozen=True)
class RunnerInfo:
    """Static facts the engine and the server need about the loaded model."""

    model_name: str
    max_model_len: int
    vocab_size: int
    block_size: int
    num_kv_blocks: int
    eos_token_ids: tuple[int, ...]
    device: str
    dtype: str
    quantization: str
    extra: dict = field(default_factory=dict)
    # the most tokens a step may compute within the memory the runner left beside its cache (None: no limit known)
    max_step_tokens: int | None = None


class ModelRunner(ABC):
    """Computes scheduled batches over a paged KV cache."""

    @property
    @abstractmethod
    def info(self) -> RunnerInfo:
        """Model and cache facts; `num_kv_blocks` is fixed once the runner is built."""

    @abstractmethod
    def execute(self, batch: ScheduledBatch) -> list[SampledToken | PromptLogprobs]:
        """Run one forward over every entry's tokens, write their KV, and sample.

        Returns one SampledToken per entry with `sample=True`, in entry order, then one PromptLogprobs
        per entry with `prompt_logprobs` set, in entry order. A seeded entry's token depends only on
        (seed, len(output_token_ids), its logits): never on the batch. An entry
        with `allowed_tokens` samples one of them (resolved after the forward is queued), drawn from its logits renormalised over them.
        """

    def launch(
        self, batch: ScheduledBatch, previous: Callable[[], list[SampledToken]] | None = None
    ) -> Callable[[], list[SampledToken]]:
        """Start `execute(batch)`; the returned callable waits for it and returns its result.

        A runner whose device computes asynchronously (CUDA) queues the step's work here and
        returns at once, so the caller's other host work overlaps the device. Default: compute now.

        `previous` (only when `can_follow(batch)`): the still unfinished launch of the step before,
        whose entries are this batch's sequences in the same order, one token each. Each entry's
        input token is then that step's sampled token, taken on the device; `batch`'s own token
        ids are placeholders. The engine launches such a step before the previous one's tokens
        reach the host, so the device never waits for the host between decode steps. Its entries'
        `allowed_tokens` may depend on those tokens: the runner resolves them (and samples) only when the
        returned callable is called or the launch is passed on as a `previous`, by which time the engine
        has postprocessed the previous step.
        """
        if previous is not None:
            raise ValueError(f"{type(self).__name__} cannot take its input tokens from a previous launch")
        sampled = self.execute(batch)
        return lambda: sampled

    def previous_taken(self, launch: Callable[[], list[SampledToken]]) -> None:
        """The constraint states of `launch`'s sequences (a lookahead launch) took the tokens of the step before it,
        so `launch`'s masks may be resolved from now on, while the engine finishes postprocessing that step and plans
        and stages the next. Default: nothing (they are resolved when the launch is read or followed)."""

    # Whether a lookahead step may carry penalised sampling: the runner keeps the penalised sequences' histories
    # itself and appends each sampled token, so an entry without its latest token (`history_on_host` False) is
    # penalised right. Seeded sampling never follows (its draw depends on the count of tokens generated).
    follows_penalties: bool = False

    def can_follow(self, batch: ScheduledBatch) -> bool:
        """True if the step after `batch` (its sequences, one token each) may be launched with
        `previous=` `batch`'s launch. Default: False."""
        return False

    def warm_up(self, max_step_tokens: int) -> int:
        """Before serving: compile whatever the device would otherwise compile on first use, for steps of up
        to `max_step_tokens` tokens. It may write any KV block. Returns the forwards it ran (default: none)."""
        return 0

    def release(self, seq_id: int) -> None:
        """Forget any per-sequence state (the KV blocks themselves belong to the engine)."""

    def shutdown(self) -> None:
        """Free device memory; the runner is unusable afterwards."""
