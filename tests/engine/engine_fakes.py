"""Test doubles for the engine: a toy runner with a real paged slot cache, and a tiny tokenizer."""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tkr_embed.backends.torch.prompt_logprobs import PromptScores
from tkr_embed.backends.torch.sampler import Sampler
from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import RequestOutput
from tkr_embed.engine.runner import BatchEntry, ModelRunner, PromptLogprobs, RunnerInfo, SampledToken, ScheduledBatch
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.step_loop import AddRequest, run_to_completion

VOCAB_SIZE = 64
EOS_ID = 63


class KVCacheError(AssertionError):
    """The engine handed the runner a block table that does not hold the context it claims."""


class ToyRunner(ModelRunner):
    """Next-token logits are a pseudo-random function of the whole context, read back from its KV slots.

    Each slot stores (position, token) as a model would store K/V; a wrong block table, a block
    reused while still needed, or a prefix-cache hit on the wrong block changes (or breaks) the
    context read back, hence the outputs.
    """

    def __init__(
        self,
        num_kv_blocks: int = 256,
        block_size: int = 4,
        max_model_len: int = 512,
        eos_logit: float | None = None,
        step_delay_s: float = 0.0,
        hang_on_token: int | None = None,
    ) -> None:
        self.eos_logit = eos_logit
        self.step_delay_s = step_delay_s  # host time a step takes (a device would compute meanwhile)
        self.hang_on_token = hang_on_token  # a step computing this token never ends, as on a hung device
        self._info = RunnerInfo(
            model_name="toy",
            max_model_len=max_model_len,
            vocab_size=VOCAB_SIZE,
            block_size=block_size,
            num_kv_blocks=num_kv_blocks,
            eos_token_ids=(EOS_ID,),
            device="cpu",
            dtype="float32",
            quantization="none",
        )
        self.slots: list[tuple[int, int] | None] = [None] * (num_kv_blocks * block_size)
        self.sampler = Sampler()
        self.num_tokens_computed = 0
        self.released: list[int] = []
        self.batches: list[ScheduledBatch] = []

    @property
    def info(self) -> RunnerInfo:
        return self._info

    def execute(self, batch: ScheduledBatch) -> list[SampledToken | PromptLogprobs]:
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        if self.hang_on_token is not None and any(self.hang_on_token in e.token_ids for e in batch.entries):
            threading.Event().wait()
        self.batches.append(batch)
        block_size = self._info.block_size
        logits_rows, sample_entries, scored = [], [], []
        for entry in batch.entries:
            end = entry.start_pos + len(entry.token_ids)
            if len(entry.block_table) * block_size < end:
                raise KVCacheError("block table too short")
            for offset, token in enumerate(entry.token_ids):
                pos = entry.start_pos + offset
                self.slots[entry.block_table[pos // block_size] * block_size + pos % block_size] = (pos, token)
            self.num_tokens_computed += len(entry.token_ids)
            if not entry.sample and entry.prompt_logprobs is None:
                continue
            context = []
            for pos in range(end):
                slot = self.slots[entry.block_table[pos // block_size] * block_size + pos % block_size]
                if slot is None or slot[0] != pos:
                    raise KVCacheError(f"position {pos} not in its slot")
                context.append(slot[1])
            if entry.prompt_logprobs is not None:
                scored += self._score_prompt(entry, context)
            if not entry.sample:
                continue
            logits = toy_logits(context)
            if self.eos_logit is not None:
                logits[EOS_ID] = self.eos_logit
            logits_rows.append(logits)
            sample_entries.append(entry)
        sampled = self.sampler(torch.stack(logits_rows), sample_entries) if sample_entries else []
        return sampled + scored

    def _score_prompt(self, entry: BatchEntry, context: list[int]) -> list[PromptLogprobs]:
        """Each position's toy logits (from the context read back), scored as the real runners score them."""

        def row_logits(begin: int, end: int) -> torch.Tensor:  # rows of the entry's chunk
            return torch.stack([toy_logits(context[: entry.start_pos + row + 1]) for row in range(begin, end)])

        return PromptScores([entry], [len(entry.token_ids)], row_logits, VOCAB_SIZE, "cpu").results()

    def release(self, seq_id: int) -> None:
        self.released.append(seq_id)


class FollowingToyRunner(ToyRunner):
    """A ToyRunner that can launch a decode step before the previous one's tokens are read (lookahead):
    it computes at launch, in launch order, as a device queue would, taking each entry's input token
    from the previous launch's samples (its own token ids are placeholders). A following step with masks
    is computed only when it is read or followed, as ModelRunner.launch says."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.followed = 0  # steps launched with previous=

    def can_follow(self, batch: ScheduledBatch) -> bool:
        return bool(batch.entries) and all(len(e.token_ids) == 1 and e.sample for e in batch.entries)

    def launch(self, batch: ScheduledBatch, previous=None):
        if previous is not None:
            tokens = previous()
            assert self.can_follow(batch) and [t.seq_id for t in tokens] == [e.seq_id for e in batch.entries]
            batch = ScheduledBatch(
                [dataclasses.replace(e, token_ids=[t.token_id]) for e, t in zip(batch.entries, tokens, strict=False)]
            )
            self.followed += 1
        if previous is not None and any(e.allowed_tokens is not None for e in batch.entries):
            return functools.cache(lambda: self.execute(batch))
        sampled = self.execute(batch)
        return lambda: sampled


class EarlyMasksToyRunner(FollowingToyRunner):
    """A FollowingToyRunner that resolves a following step's masks (and computes it) as soon as the engine says
    the step before was taken (`previous_taken`), as the CUDA runner begins them then."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.taken_early = 0  # launches computed at previous_taken

    def previous_taken(self, launch) -> None:
        if hasattr(launch, "cache_info") and launch.cache_info().currsize == 0:  # held back, not yet computed
            self.taken_early += 1
            launch()


class GatedToyRunner(ToyRunner):
    """A ToyRunner whose steps can be held on the device: while the test holds one (`hold_next_step`), what it
    sends reaches the loop with that step in flight; `let_go` lets it finish."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._gate = threading.Condition()
        self._open = True
        self._held = 0  # steps waiting at the gate

    def execute(self, batch: ScheduledBatch) -> list[SampledToken]:
        with self._gate:
            self._held += 1
            self._gate.notify_all()
            opened = self._gate.wait_for(lambda: self._open, timeout=30)
            self._held -= 1
        if not opened:
            raise TimeoutError("the test never released the step")
        return super().execute(batch)

    def hold_next_step(self, timeout: float = 10.0) -> None:
        """Close the gate; return once a step waits at it."""
        with self._gate:
            self._open = False
            if not self._gate.wait_for(lambda: self._held > 0, timeout):
                raise TimeoutError("no step started")

    def let_go(self) -> None:
        with self._gate:
            self._open = True
            self._gate.notify_all()


@dataclass(frozen=True)
class ToyBuild:
    """A toy engine as the engine process builds it (picklable, for ProcessEngine)."""

    step_delay_s: float = 0.0
    hang_on_token: int | None = None
    num_kv_blocks: int = 256

    def __call__(self) -> LLMEngine:
        runner = ToyRunner(
            num_kv_blocks=self.num_kv_blocks, step_delay_s=self.step_delay_s, hang_on_token=self.hang_on_token
        )
        return LLMEngine(runner, ToyTokenizer(), EngineConfig())


def toy_logits(context: Sequence[int]) -> torch.Tensor:
    """[V] float32 logits determined by the context."""
    state = 1469598103934665603
    for token in context:
        state = ((state ^ (token + 1)) * 1099511628211) % (1 << 61)
    generator = torch.Generator().manual_seed(state)
    logits = torch.randn(VOCAB_SIZE, generator=generator) * 3.0
    logits[EOS_ID] -= 2.0  # make EOS rarer so outputs have some length
    return logits


def _token_bytes(token_id: int) -> bytes:
    if token_id < 26:
        return bytes([97 + token_id])  # a..z
    if token_id < 36:
        return bytes([48 + token_id - 26])  # 0..9
    if token_id == 36:
        return b" "
    if token_id == 37:
        return b"\xc3"  # first half of "é"
    if token_id == 38:
        return b"\xa9"  # second half of "é"
    if token_id == 39:
        return b"\n"
    if token_id < EOS_ID:
        i = token_id - 40
        return bytes([97 + i, 98 + i])  # "ab", "bc", ...
    return b"<|eos|>"


class ToyTokenizer:
    vocab_size = VOCAB_SIZE
    eos_token_ids = (EOS_ID,)

    def encode(self, text: str) -> list[int]:
        return [_BYTE_TO_ID[b] for b in text.encode()]

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.decode_bytes(token_ids).decode("utf-8", errors="replace")

    def decode_bytes(self, token_ids: Sequence[int]) -> bytes:
        return b"".join(_token_bytes(t) for t in token_ids)


_BYTE_TO_ID = {_token_bytes(t)[0]: t for t in range(40) if len(_token_bytes(t)) == 1}


def step(engine: LLMEngine) -> list[RequestOutput]:
    """One step of the engine without lookahead, for tests that look at the engine between steps: plan, launch,
    read the tokens, postprocess (what `StepLoop` does each step)."""
    planned = engine.plan_step()
    if planned is None:
        return []
    launched = engine.launch(*planned)
    return engine.postprocess(launched.batch, launched.finish())


def run_all(engine: LLMEngine, requests: dict[str, tuple[list[int], SamplingParams]]) -> dict[str, RequestOutput]:
    """Serve `requests` (and whatever the engine holds already) to the end through the step loop; the finals."""
    finals: dict[str, RequestOutput] = {}

    def collect(output: RequestOutput) -> None:
        if output.finished:
            finals[output.request_id] = output

    adds = [
        AddRequest(request_id, prompt, params, time.monotonic()) for request_id, (prompt, params) in requests.items()
    ]
    run_to_completion(engine, adds, collect)
    return finals
