"""MlxModelRunner: the engine's runner contract on MLX (Metal on Apple Silicon, MLX's CPU backend elsewhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import torch

from tkr_embed.backends.device import DeviceUnavailableError, QuantizationChoice, resolve_quantization
from tkr_embed.backends.kv_budget import host_kv_cache_bytes, kv_bytes_per_block
from tkr_embed.backends.mlx.attention import PagedKVCache, build_metadata
from tkr_embed.backends.mlx.loader import load_mlx_model
from tkr_embed.backends.mlx.sampler import MlxSampler
from tkr_embed.backends.torch.prompt_logprobs import PromptScores
from tkr_embed.engine.args import DEFAULT_KV_CACHE_MEMORY_FRACTION
from tkr_embed.engine.runner import ModelRunner, PromptLogprobs, RunnerInfo, SampledToken, ScheduledBatch

_DTYPES = {
    "bfloat16": mx.bfloat16,
    "bf16": mx.bfloat16,
    "float16": mx.float16,
    "fp16": mx.float16,
    "half": mx.float16,
    "float32": mx.float32,
    "fp32": mx.float32,
    "float": mx.float32,
}
_DTYPE_NAMES = {mx.bfloat16: "bfloat16", mx.float16: "float16", mx.float32: "float32"}


def resolve_mlx_dtype(dtype: Any, on_gpu: bool) -> mx.Dtype:
    """None: bfloat16 (the checkpoints' precision) on Metal, float32 on MLX's CPU backend.

    Accepts MLX dtypes, names ("bfloat16", "fp32", ...) and torch dtypes (by name).
    """
    if dtype is None:
        return mx.bfloat16 if on_gpu else mx.float32
    if isinstance(dtype, mx.Dtype):
        return dtype
    name = str(dtype).removeprefix("torch.").lower()
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


class MlxModelRunner(ModelRunner):
    """Runs gpt-oss on MLX over the engine's paged KV blocks.

    The KV cache holds `num_kv_blocks` blocks of `block_size` slots for every layer; its size is fixed
    at construction: an explicit block count, else `kv_cache_bytes`, else a fraction of the Metal
    working set left after the weights, or min(1 GiB, what 64 full-length sequences need) on CPU.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "auto",
        dtype: Any = None,
        quantization: str = "auto",
        block_size: int = 16,
        num_kv_blocks: int | None = None,
        kv_cache_memory_fraction: float = DEFAULT_KV_CACHE_MEMORY_FRACTION,
        kv_cache_bytes: int | None = None,
        max_model_len: int | None = None,
        memory_bytes: int | None = None,
        max_num_batched_tokens: int | None = None,  # unused: the budget here comes from memory_bytes
        max_idle_step_tokens: int | None = None,  # unused, as max_num_batched_tokens
    ) -> None:
        """device: "gpu" (Metal), "cpu" (MLX's CPU backend) or "auto" (Metal when available).

        memory_bytes overrides the machine memory that `quantization="auto"` reads (tests).
        """
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        on_gpu = self._select_device(device)
        self.dtype = resolve_mlx_dtype(dtype, on_gpu)
        self.quantization: QuantizationChoice = resolve_quantization(quantization, memory_bytes=memory_bytes)
        self.model = load_mlx_model(model_path, dtype=self.dtype, bits=self.quantization.bits)
        self.config = self.model.config
        self.block_size = block_size
        context_len = min(max_model_len or self.config.max_position_embeddings, self.config.max_position_embeddings)
        if num_kv_blocks is None:
            num_kv_blocks = self._blocks_from_budget(kv_cache_bytes, kv_cache_memory_fraction, context_len, on_gpu)
        if num_kv_blocks < 1:
            raise ValueError("the KV cache budget does not hold a single block")
        self.cache = PagedKVCache(
            self.config.num_hidden_layers,
            num_kv_blocks,
            block_size,
            self.config.num_key_value_heads,
            self.config.head_dim,
            self.dtype,
        )
        self.sampler = MlxSampler()
        self._sliding_window = self.config.sliding_window if self.config.num_sliding_layers else None
        self._info = RunnerInfo(
            model_name=Path(model_path).name,
            max_model_len=context_len,
            vocab_size=self.config.vocab_size,
            block_size=block_size,
            num_kv_blocks=num_kv_blocks,
            eos_token_ids=tuple(self.config.eos_token_id),
            device="mlx:gpu" if on_gpu else "mlx:cpu",
            dtype=_DTYPE_NAMES[self.dtype],
            quantization=self.quantization.name,
            extra={
                "backend": "mlx",
                "quantization_reason": self.quantization.reason,
                "experts": "mxfp4",
                "quantized_bits": self.quantization.bits,
            },
        )

    @staticmethod
    def _select_device(device: str) -> bool:
        name = device.lower()
        metal = mx.metal.is_available()
        if name in ("auto", "mlx"):
            name = "gpu" if metal else "cpu"
        if name == "gpu":
            if not metal:
                raise DeviceUnavailableError("MLX Metal was asked for but is not available here")
            mx.set_default_device(mx.gpu)
            return True
        if name == "cpu":
            mx.set_default_device(mx.cpu)
            return False
        raise DeviceUnavailableError(f"unknown MLX device {device!r}; use auto, gpu or cpu")

    def _bytes_per_block(self) -> int:
        return kv_bytes_per_block(
            num_layers=self.config.num_hidden_layers,
            num_kv_heads=self.config.num_key_value_heads,
            head_dim=self.config.head_dim,
            block_size=self.block_size,
            itemsize=self.dtype.size,
        )

    def _blocks_from_budget(self, kv_cache_bytes: int | None, fraction: float, context_len: int, on_gpu: bool) -> int:
        if kv_cache_bytes is None:
            if on_gpu:
                working_set = int(mx.device_info()["max_recommended_working_set_size"])
                kv_cache_bytes = int(max(0, working_set - mx.get_active_memory()) * fraction)
            else:
                kv_cache_bytes = host_kv_cache_bytes(
                    context_len=context_len, block_size=self.block_size, bytes_per_block=self._bytes_per_block()
                )
        return kv_cache_bytes // self._bytes_per_block()

    @property
    def info(self) -> RunnerInfo:
        return self._info

    def execute(self, batch: ScheduledBatch) -> list[SampledToken | PromptLogprobs]:
        if not batch.entries:
            return []
        logits, hidden = self._forward(batch)  # [S, V] float32, [T, hidden]
        sample_entries = [e for e in batch.entries if e.sample]
        results: list[SampledToken | PromptLogprobs] = self.sampler(logits, sample_entries) if sample_entries else []
        if any(e.prompt_logprobs is not None for e in batch.entries):
            results += self._prompt_scores(batch, hidden).results()
        return results

    def _prompt_scores(self, batch: ScheduledBatch, hidden: mx.array) -> PromptScores:
        """The prompt scores of the entries that ask for them, from `hidden` [T, hidden] (the torch runner's
        arithmetic on the host: the same log-softmax and top-k ordering)."""
        ends = np.cumsum([len(e.token_ids) for e in batch.entries]).tolist()

        def row_logits(begin: int, end: int) -> torch.Tensor:
            logits = self.model.compute_logits(hidden[begin:end])  # [rows, V] float32
            return torch.from_numpy(np.array(logits, copy=True))

        return PromptScores(batch.entries, ends, row_logits, self.config.vocab_size, "cpu")

    def logits_for(self, batch: ScheduledBatch) -> mx.array:
        """One forward over the batch (writing its KV): logits [S, V] of the entries that sample."""
        return self._forward(batch)[0]

    def _forward(self, batch: ScheduledBatch) -> tuple[mx.array, mx.array]:
        """One forward over the batch (writing its KV): logits [S, V] float32 of the entries that sample, and
        the hidden states [T, hidden] of every token."""
        token_ids: list[int] = []
        positions: list[int] = []
        last_rows: list[int] = []  # row of each sampled entry's last token in the flat batch
        for entry in batch.entries:
            token_ids.extend(entry.token_ids)
            positions.extend(range(entry.start_pos, entry.start_pos + len(entry.token_ids)))
            if entry.sample:
                last_rows.append(len(token_ids) - 1)
        metadata = build_metadata(
            [(e.start_pos, len(e.token_ids), e.block_table) for e in batch.entries],
            self.block_size,
            self._sliding_window,
        )
        input_ids = mx.array(np.asarray(token_ids, dtype=np.int32))  # [T]
        position_ids = mx.array(np.asarray(positions, dtype=np.int32))  # [T]
        hidden = self.model.forward(input_ids, position_ids, self.cache, metadata)  # [T, hidden]
        rows = mx.array(np.asarray(last_rows, dtype=np.int32))  # [S]
        logits = self.model.compute_logits(hidden[rows])  # [S, V] float32
        mx.eval(logits, hidden, self.cache.arrays())  # one evaluation a step keeps the lazy graph short
        return logits, hidden

    def shutdown(self) -> None:
        self.cache = None
        self.model = None
        mx.clear_cache()
