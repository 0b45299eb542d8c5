"""TorchModelRunner: one forward over a scheduled batch on the paged KV cache, then sampling."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from tkr_embed.backends.kv_budget import (
    blocks_with_step_room,
    device_kv_cache_bytes,
    host_kv_cache_bytes,
    kv_bytes_per_block,
    model_step_activation_bytes,
)
from tkr_embed.backends.torch.attention import allocate_kv_cache, build_attention_metadata
from tkr_embed.backends.torch.host_copy import on_device
from tkr_embed.backends.torch.prompt_logprobs import PromptScores
from tkr_embed.backends.torch.queued_step import QueuedStep
from tkr_embed.backends.torch.sampler import Sampler
from tkr_embed.engine.args import DEFAULT_KV_CACHE_MEMORY_FRACTION
from tkr_embed.engine.constraints import mask_words
from tkr_embed.engine.runner import (
    BatchEntry,
    ModelRunner,
    PromptLogprobs,
    RunnerInfo,
    SampledToken,
    ScheduledBatch,
)

logger = logging.getLogger(__name__)

CUDA_ACTIVATION_RESERVE = 1 << 30  # CUDA: kept free beside the KV cache for eager prefill activations
DEFAULT_MAX_STEP_TOKENS = 8192  # the engine's step size the cache leaves room for, when not told

_DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


def resolve_dtype(dtype: torch.dtype | str | None, device: str | torch.device = "cuda") -> torch.dtype:
    """None means bfloat16 (the checkpoints' own precision) on accelerators, float32 on CPU (faster there)."""
    if dtype is None:
        return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype.lower() not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype.lower()]


class TorchModelRunner(ModelRunner):
    """Runs a GptOssForCausalLM (CPU or CUDA) over the engine's paged KV blocks.

    The KV cache is one tensor per layer [2, num_kv_blocks, block_size, Hkv, D]; its size is fixed at
    construction: an explicit block count, else `kv_cache_bytes`, else a fraction of the free device
    memory (CUDA) or min(1 GiB, what 64 full-length sequences need) on CPU.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        quantization: str = "mxfp4",
        **options,
    ) -> None:
        """Load the checkpoint at `model_path`; `options` size the cache and the graphs (see `_setup`)."""
        from tkr_embed.models.gpt_oss.loader import load_model

        torch_dtype = resolve_dtype(dtype, device)
        model = load_model(model_path, device=device, dtype=torch_dtype, quantization=quantization, verbose=False)
        self._setup(model, model_name=Path(model_path).name, quantization=quantization, **options)

    @classmethod
    def from_model(cls, model: torch.nn.Module, *, model_name: str = "gpt-oss", **options) -> TorchModelRunner:
        """A runner around an already built model (e.g. random weights of the real shape); `options` are the
        constructor's (quantization, block_size, num_kv_blocks, ...)."""
        runner = cls.__new__(cls)
        runner._setup(model, model_name=model_name, **options)
        return runner

    def _setup(
        self,
        model: torch.nn.Module,
        *,
        model_name: str,
        quantization: str = "mxfp4",
        block_size: int = 16,
        num_kv_blocks: int | None = None,
        kv_cache_memory_fraction: float = DEFAULT_KV_CACHE_MEMORY_FRACTION,
        kv_cache_bytes: int | None = None,
        max_model_len: int | None = None,
        cuda_graph_batch_sizes: Sequence[int] | None = None,
        max_num_batched_tokens: int | None = None,
        max_idle_step_tokens: int | None = None,
        max_decode_batch: int | None = None,
    ) -> None:
        """block_size: tokens a KV block holds; num_kv_blocks, else kv_cache_bytes, else kv_cache_memory_fraction
        of the free memory: the cache; max_model_len: the context (default the model's); cuda_graph_batch_sizes:
        the decode batches captured (() none; default cuda_decode's); max_num_batched_tokens: the engine's step
        budget, which the CUDA cache leaves room for; max_idle_step_tokens: a larger step the engine would take when
        nothing decodes, left room for only while that costs little cache (kv_budget.blocks_with_step_room)
        (`info.max_step_tokens` says which); max_decode_batch: the engine's max_num_seqs, the largest decode batch
        captured when cuda_graph_batch_sizes is None (cuda_decode.decode_graph_batch_sizes)."""
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        self.model = model
        self.config = model.config
        self.device = model.device
        self.dtype = model.dtype
        self.block_size = block_size
        if self.device.type == "cuda" and hasattr(model, "prepare_kernels"):
            model.prepare_kernels()  # fused q/k/v weight for the kernel path (views, no copy kept)
        context_len = min(max_model_len or self.config.max_position_embeddings, self.config.max_position_embeddings)
        step_tokens = max_num_batched_tokens or DEFAULT_MAX_STEP_TOKENS
        max_step_tokens = max(step_tokens, max_idle_step_tokens or 0)
        self._graph_sizes: tuple[int, ...] = ()
        if self.device.type == "cuda" and cuda_graph_batch_sizes != ():
            from tkr_embed.backends.torch.cuda_decode import decode_graph_batch_sizes

            self._graph_sizes = tuple(cuda_graph_batch_sizes or decode_graph_batch_sizes(max_decode_batch))
        if num_kv_blocks is None:
            num_kv_blocks, max_step_tokens = blocks_with_step_room(
                lambda tokens: self._blocks_from_budget(kv_cache_bytes, kv_cache_memory_fraction, context_len, tokens),
                step_tokens,
                max_idle_step_tokens,
            )
            if max_step_tokens < (max_idle_step_tokens or 0):
                logger.info(
                    "steps without decodes stay within %d tokens: room for %d would cost more than a tenth of "
                    "the KV cache",
                    step_tokens,
                    max_idle_step_tokens,
                )
        if num_kv_blocks < 1:
            raise ValueError("the KV cache budget does not hold a single block")
        on_cuda = self.device.type == "cuda"
        # CUDA: one extra block past the engine's ids is the scratch block that graph padding rows write to.
        allocated = num_kv_blocks + 1 if on_cuda else num_kv_blocks
        self.kv_caches = allocate_kv_cache(self.config, allocated, block_size, dtype=self.dtype, device=self.device)
        self.sampler = Sampler(keep_histories=True)
        self._token_buffers: list[torch.Tensor] = []
        self._token_turn = 0
        self.decode_graphs = None
        if self._graph_sizes:
            from tkr_embed.backends.torch.cuda_decode import CudaDecodeGraphs

            self.decode_graphs = CudaDecodeGraphs(
                model,
                self.kv_caches,
                block_size=block_size,
                scratch_block=num_kv_blocks,
                max_blocks_per_seq=-(-context_len // block_size),
                batch_sizes=self._graph_sizes,
            )
        self._info = RunnerInfo(
            model_name=model_name,
            max_model_len=context_len,
            vocab_size=self.config.vocab_size,
            block_size=block_size,
            num_kv_blocks=num_kv_blocks,
            eos_token_ids=tuple(self.config.eos_token_id),
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            quantization=quantization,
            max_step_tokens=max_step_tokens if on_cuda else None,
        )
        if on_cuda:
            free_bytes, _ = torch.cuda.mem_get_info(self.device)
            self._info.extra.update(
                **(self.decode_graphs.summary() if self.decode_graphs else {"cuda_graph_batch_sizes": []}),
                kv_cache_gib=round(num_kv_blocks * self._bytes_per_block() / 2**30, 2),
                free_gib_after_setup=round(free_bytes / 2**30, 2),
            )

    def _bytes_per_block(self) -> int:
        return kv_bytes_per_block(
            num_layers=self.config.num_hidden_layers,
            num_kv_heads=self.config.num_key_value_heads,
            head_dim=self.config.head_dim,
            block_size=self.block_size,
            itemsize=torch.empty((), dtype=self.dtype).element_size(),
        )

    def _blocks_from_budget(
        self, kv_cache_bytes: int | None, fraction: float, context_len: int, step_tokens: int
    ) -> int:
        if kv_cache_bytes is None:
            if self.device.type == "cuda":
                from tkr_embed.backends.torch.cuda_decode import graph_memory_estimate
                from tkr_embed.backends.torch.kernels.mxfp4_moe_prefill import CHUNK_TOKENS, SCRATCH_BYTES

                # weights are loaded; graphs are captured after the cache, so their memory is reserved here;
                # the largest step (the engine's max_num_batched_tokens) must still fit beside the cache
                free_bytes, _ = torch.cuda.mem_get_info(self.device)
                config = self.config
                step_bytes = model_step_activation_bytes(
                    config,
                    num_tokens=step_tokens,
                    itemsize=torch.empty((), dtype=self.dtype).element_size(),
                    moe_tokens=CHUNK_TOKENS,
                    scratch_bytes=SCRATCH_BYTES,
                )
                kv_cache_bytes = device_kv_cache_bytes(
                    free_bytes=free_bytes,
                    fraction=fraction,
                    reserve_bytes=CUDA_ACTIVATION_RESERVE,
                    step_bytes=step_bytes,
                    other_bytes=graph_memory_estimate(
                        config,
                        self._graph_sizes,
                        max_blocks_per_seq=-(-context_len // self.block_size),
                        itemsize=self.dtype.itemsize,
                    ),
                )
            else:
                kv_cache_bytes = host_kv_cache_bytes(
                    context_len=context_len, block_size=self.block_size, bytes_per_block=self._bytes_per_block()
                )
        return kv_cache_bytes // self._bytes_per_block()

    @property
    def info(self) -> RunnerInfo:
        return self._info

    @torch.inference_mode()
    def warm_up(self, max_step_tokens: int) -> int:
        """CUDA: one eager forward of a sequence of each of `warm_up.warm_up_token_counts`, written to the
        first KV blocks (see warm_up.py). CPU: nothing is compiled on first use."""
        if self.device.type != "cuda":
            return 0
        from tkr_embed.backends.torch.kernels.token_mask import masked_logits
        from tkr_embed.backends.torch.warm_up import warm_up_sampler, warm_up_token_counts

        capacity = min(self._info.num_kv_blocks * self.block_size, self._info.max_model_len)
        counts = warm_up_token_counts(max_step_tokens, capacity)
        for count in counts:
            blocks = list(range(-(-count // self.block_size)))
            self.logits(
                ScheduledBatch(
                    [BatchEntry(seq_id=-1, token_ids=[0] * count, start_pos=0, block_table=blocks, sample=False)]
                )
            )
        vocab = self._info.vocab_size  # the constrained steps' mask kernel, at the shapes it will meet
        masked_logits(
            torch.zeros(1, vocab, device=self.device),
            torch.zeros(1, mask_words(vocab), dtype=torch.int32, device=self.device),
        )
        warm_up_sampler(self.sampler, vocab, self.device)
        torch.cuda.synchronize(self.device)
        return len(counts)

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch) -> list[SampledToken | PromptLogprobs]:
        return self.launch(batch)()

    def launch(self, batch: ScheduledBatch, previous: Callable[[], list[SampledToken]] | None = None) -> QueuedStep:
        """The forward is queued on the device now, and the sampling with it unless the step follows `previous`
        and has masks (they wait for the previous step's tokens: ModelRunner.launch); the returned callable
        reads the tokens (the step's one host sync). With `previous` the input tokens are that launch's
        samples, copied on the device."""
        if previous is not None and not (
            isinstance(previous, QueuedStep) and self.can_follow(batch) and len(batch.entries) == len(previous.entries)
        ):
            raise ValueError("launch(previous=...) takes one decode token per entry of the previous launch")
        sample_entries = [e for e in batch.entries if e.sample]
        scores = None
        if any(e.prompt_logprobs is not None for e in batch.entries):  # prefill: never a graph, never a follower
            logits, scores = self._logits_and_prompt_scores(batch)
        else:
            token_source = None
            if previous is not None:
                previous.start_masks()  # resolved off-thread while this forward's inputs are staged
                token_source = previous.sampled_token_ids  # its sampling is queued before this forward
            logits = self.logits(batch, token_source=token_source)  # [S, V] float32
        if logits is None:
            return QueuedStep(sample_entries, None, None, self.sampler, scores)
        launched = QueuedStep(
            sample_entries, logits, self._next_token_buffer(len(sample_entries)), self.sampler, scores
        )
        if previous is None or all(e.allowed_tokens is None for e in sample_entries):
            launched.sample()
        return launched

    def previous_taken(self, launch: Callable[[], list[SampledToken]]) -> None:
        if isinstance(launch, QueuedStep):
            launch.start_masks()  # on the sampler's worker thread, until this launch is followed or read

    def _next_token_buffer(self, rows: int) -> torch.Tensor | None:
        """CUDA: a pinned int64 buffer for a step's token ids, three used in turn (a step's is read before
        the step two launches later is queued: at most a step and its lookahead are in flight)."""
        if self.device.type != "cuda":
            return None
        if not self._token_buffers or self._token_buffers[0].numel() < rows:
            self._token_buffers = [torch.empty(max(rows, 64), dtype=torch.int64, pin_memory=True) for _ in range(3)]
        self._token_turn = (self._token_turn + 1) % 3
        return self._token_buffers[self._token_turn]

    follows_penalties = True  # the sampler keeps the penalised sequences' histories on the device

    def can_follow(self, batch: ScheduledBatch) -> bool:
        return bool(batch.entries) and all(len(e.token_ids) == 1 and e.sample for e in batch.entries)

    def release(self, seq_id: int) -> None:
        self.sampler.release(seq_id)

    @torch.inference_mode()
    def logits(
        self,
        batch: ScheduledBatch,
        *,
        use_graphs: bool = True,
        token_source: Callable[[], torch.Tensor] | None = None,
    ) -> torch.Tensor | None:
        """Run the forward and return the float32 logits [S, V] of the sampled entries (None if none).

        On CUDA a decode-only batch replays a captured graph unless use_graphs is False.
        token_source (one-token entries only): gives the input tokens [S] on the device, instead of the
        entries' token ids; it is called once the forward's other inputs are staged, just before it is queued.
        """
        entries = batch.entries
        if not entries:
            return None
        if use_graphs and self.decode_graphs is not None and self.decode_graphs.fits(entries):
            return self.decode_graphs.logits(entries, token_source)
        hidden, ends = self._forward_eager(entries, token_source)  # [T, D]
        return self._sampled_logits(hidden, entries, ends)

    @torch.inference_mode()
    def _logits_and_prompt_scores(self, batch: ScheduledBatch) -> tuple[torch.Tensor | None, PromptScores]:
        """One eager forward; -> the sampled entries' logits [S, V] float32 and the prompt scores of the
        entries that ask for them, from the hidden states of every position."""
        hidden, ends = self._forward_eager(batch.entries, None)  # [T, D]
        scores = PromptScores(
            batch.entries,
            ends,
            lambda begin, end: self.model.compute_logits(hidden[begin:end]),  # [rows, V] float32
            self.config.vocab_size,
            self.device,
        )
        return self._sampled_logits(hidden, batch.entries, ends), scores

    def _sampled_logits(
        self, hidden: torch.Tensor, entries: Sequence[BatchEntry], ends: list[int]
    ) -> torch.Tensor | None:
        """The logits [S, V] float32 of each sampled entry's last row of `hidden` [T, D] (None if none samples)."""
        last_rows = [end - 1 for end, e in zip(ends, entries, strict=True) if e.sample]
        if not last_rows:
            return None
        rows = on_device(last_rows, torch.int64, self.device)  # [S]
        return self.model.compute_logits(hidden.index_select(0, rows))  # [S, V] float32

    def _forward_eager(
        self, entries: Sequence[BatchEntry], token_source: Callable[[], torch.Tensor] | None
    ) -> tuple[torch.Tensor, list[int]]:
        """The forward over every token of the batch, writing their KV; -> the hidden states [T, D] and each
        entry's end row."""
        lengths = [len(e.token_ids) for e in entries]
        ends = list(itertools.accumulate(lengths))
        metadata = build_attention_metadata(
            [(e.start_pos, n, e.block_table) for e, n in zip(entries, lengths, strict=False)],
            self.block_size,
            self.device,
        )
        # the flat batch's token ids and positions [T] built by numpy (prefill chunks hold thousands of tokens)
        if token_source is not None:
            input_ids = token_source().to(dtype=torch.int64, device=self.device)  # one per entry
        else:
            input_ids = on_device(
                np.fromiter(
                    itertools.chain.from_iterable(e.token_ids for e in entries), dtype=np.int64, count=ends[-1]
                ),
                torch.int64,
                self.device,
            )
        # row r of an entry whose first row is f holds position start_pos + (r - f)
        first_rows = np.array(ends, dtype=np.int64) - lengths
        shift = np.repeat(np.array([e.start_pos for e in entries], dtype=np.int64) - first_rows, lengths)
        position_ids = on_device(np.arange(ends[-1], dtype=np.int64) + shift, torch.int64, self.device)
        return self.model(input_ids, position_ids, self.kv_caches, metadata), ends  # [T, D]

    def shutdown(self) -> None:
        self.decode_graphs = None
        self.kv_caches = []
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
