"""Decode steps of the torch runner on CUDA, captured as CUDA graphs (one per batch size).

A decode-only batch of n sequences replays the graph of the smallest captured size >= n. Its
static inputs are filled from pinned host buffers that keep their layout: token ids, positions, KV
slots and sequence lengths are one [4, B] int64 block (one copy, no device kernels), the block tables
a second copy. The rows past n are padding: token 0 at position 0 writing its KV to the scratch block
(a block the engine never hands out) and attending only to that slot. The graph returns float32
logits [padded, V]; sampling runs after it.

Every graph writes its logits into one [max B, V] buffer and reads its block tables from the first rows of
one [max B, blocks] buffer: one step runs at a time, and the sampler reads a step's logits before the next
step is queued on the same stream. So the graphs' memory grows with the largest batch, not with the number
of sizes captured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from tkr_embed.backends.kv_budget import decode_graph_bytes, model_step_activation_bytes
from tkr_embed.backends.torch.attention import AttentionMetadata
from tkr_embed.backends.torch.cuda_graphs import CudaGraphSteps
from tkr_embed.engine.runner import BatchEntry

logger = logging.getLogger(__name__)

DEFAULT_MAX_DECODE_BATCH = 64  # the engine's default max_num_seqs, for a runner not told its own
# Larger decode batches run eager: capture time and the graphs' pool grow with the batch, and from 4,096
# tokens the MoE takes a path that reads its expert counts on the host (mxfp4_moe.PREFILL_DEQUANT_MIN_TOKENS).
MAX_GRAPH_BATCH = 1024


def decode_graph_batch_sizes(max_batch: int | None) -> tuple[int, ...]:
    """The decode batch sizes to capture for an engine of up to `max_batch` sequences (None: the engine's
    default): 1, 2, 4, every 8 up to 64, every 16 up to 256, every 32 above, and `max_batch` itself (at most
    MAX_GRAPH_BATCH). A batch pads to the next size: at most 7 rows up to 64, 15 up to 256, 31 above."""
    top = min(max_batch or DEFAULT_MAX_DECODE_BATCH, MAX_GRAPH_BATCH)
    if top < 1:
        raise ValueError("the largest decode batch must be at least 1")
    steps = {1, 2, 4, *range(8, 65, 8), *range(80, 257, 16), *range(288, MAX_GRAPH_BATCH + 1, 32)}
    return tuple(sorted({size for size in steps if size < top} | {top}))


def graph_memory_estimate(config, batch_sizes: Sequence[int], *, max_blocks_per_seq: int, itemsize: int = 2) -> int:
    """The device memory that decode graphs of `batch_sizes` are expected to hold (kv_budget.decode_graph_bytes),
    which the CUDA KV budget leaves out; 0 for none. `config`: the model's (GptOssConfig)."""
    if not batch_sizes:
        return 0
    max_batch = max(batch_sizes)
    step_bytes = model_step_activation_bytes(config, num_tokens=max_batch, itemsize=itemsize)
    return decode_graph_bytes(
        max_batch=max_batch,
        vocab_size=config.vocab_size,
        max_blocks_per_seq=max_blocks_per_seq,
        step_bytes=step_bytes,
        itemsize=itemsize,
    )


class CudaDecodeGraphs:
    """One captured decode step of `model` per batch size, over the runner's KV cache.

    `capture_seconds` and `memory_bytes` (the device memory the capture took: the graphs' pool, their
    static buffers and anything the driver holds for them) are measured at construction."""

    def __init__(
        self,
        model: torch.nn.Module,
        kv_caches: list[torch.Tensor],
        *,
        block_size: int,
        scratch_block: int,
        max_blocks_per_seq: int,
        batch_sizes: Sequence[int],
    ) -> None:
        if not batch_sizes:
            raise ValueError("batch_sizes must not be empty")
        self.model = model
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.scratch_block = scratch_block
        self.max_blocks_per_seq = max_blocks_per_seq
        self.device = model.device
        self.max_batch_size = max(batch_sizes)
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()  # so that the free memory measured below moves only with the capture
        free_before, _ = torch.cuda.mem_get_info(self.device)
        began = time.perf_counter()
        max_width = self.max_batch_size + self.max_batch_size % 2
        self._packed: dict[int, torch.Tensor] = {}
        self._block_tables = torch.full(
            (self.max_batch_size, max_blocks_per_seq), scratch_block, dtype=torch.int32, device=self.device
        )  # [B max, blocks]
        self._logits = torch.empty(
            self.max_batch_size, model.config.vocab_size, dtype=torch.float32, device=self.device
        )  # [B max, V]
        self._staging = _Staging(max_width, max_blocks_per_seq)
        self._graphs = CudaGraphSteps(self._step, self._make_inputs, batch_sizes)
        self.capture_seconds = time.perf_counter() - began
        torch.cuda.empty_cache()  # the capture's warm-up runs cache activations outside the graphs' pool
        self.memory_bytes = free_before - torch.cuda.mem_get_info(self.device)[0]
        self.budget_bytes = graph_memory_estimate(
            model.config, batch_sizes, max_blocks_per_seq=max_blocks_per_seq, itemsize=model.dtype.itemsize
        )
        logger.info(
            "decode steps of %d batch sizes up to %d captured as CUDA graphs in %.1f s, holding %.2f GiB "
            "(estimated %.2f GiB: what a KV budget from free memory leaves them)",
            len(self._graphs.batch_sizes),
            self.max_batch_size,
            self.capture_seconds,
            self.memory_bytes / 2**30,
            self.budget_bytes / 2**30,
        )

    @property
    def batch_sizes(self) -> list[int]:
        return list(self._graphs.batch_sizes)

    def summary(self) -> dict[str, object]:
        """What the runner reports of its graphs (RunnerInfo.extra)."""
        return {
            "cuda_graph_batch_sizes": self.batch_sizes,
            "cuda_graph_gib": round(self.memory_bytes / 2**30, 3),
            "cuda_graph_budget_gib": round(self.budget_bytes / 2**30, 3),
            "cuda_graph_capture_s": round(self.capture_seconds, 2),
        }

    def _make_inputs(self, batch: int) -> dict[str, torch.Tensor]:
        # rows of an even width start 16-byte aligned, as the eager step's fresh tensors do: Triton compiles
        # one binary per pointer alignment, and an eager step would otherwise compile another mid-serving
        width = batch + batch % 2
        packed = torch.zeros(4, width, dtype=torch.int64, device=self.device)  # ids, positions, slots, lens
        packed[2].fill_(self.scratch_block * self.block_size)
        packed[3].view(torch.int32)[:batch].fill_(1)
        self._packed[batch] = packed
        return {
            "token_ids": packed[0, :batch],  # [B]
            "positions": packed[1, :batch],  # [B]
            "slot_mapping": packed[2, :batch],  # [B]
            "seq_lens": packed[3].view(torch.int32)[:batch],  # [B] int32
            "block_tables": self._block_tables[:batch],  # [B, blocks]
            "query_start_loc": torch.arange(batch + 1, dtype=torch.int32, device=self.device),  # [B+1]
        }

    def _step(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = inputs["token_ids"].shape[0]
        # Host lists are placeholders: the CUDA kernels read only the tensors.
        metadata = AttentionMetadata(
            slot_mapping=inputs["slot_mapping"],
            query_start_loc=inputs["query_start_loc"],
            seq_lens=inputs["seq_lens"],
            block_tables=inputs["block_tables"],
            query_lens=[1] * batch,
            seq_lens_list=[1] * batch,
            start_positions=[0] * batch,
            block_tables_list=[[self.scratch_block]] * batch,
            block_size=self.block_size,
            max_query_len=1,
            max_seq_len=1,
            is_decode_only=True,
        )
        hidden = self.model(inputs["token_ids"], inputs["positions"], self.kv_caches, metadata)  # [B, D]
        return self.model.compute_logits(hidden, out=self._logits[:batch])  # [B, V] fp32

    def fits(self, entries: Sequence[BatchEntry]) -> bool:
        """True for a batch this object can run: only single-token entries, at most the largest size."""
        return 0 < len(entries) <= self.max_batch_size and all(
            len(e.token_ids) == 1 and e.sample and len(e.block_table) <= self.max_blocks_per_seq for e in entries
        )

    def logits(
        self, entries: Sequence[BatchEntry], token_source: Callable[[], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Replay the decode step for `entries` (all single-token); -> [n, V] float32, valid until the next
        step is queued. token_source: gives the input tokens [n] on the device instead of the entries' (called
        once the host inputs are staged: what it queues runs before their copy into the graph)."""
        count = len(entries)
        padded = self._graphs.padded_size(count)
        buffers = self._graphs.static_inputs(count)
        packed = self._packed[padded]
        scalars_host, tables_host, scalars, tables = self._staging.next_host_buffers(packed.shape[1])
        width = max(len(e.block_table) for e in entries)
        bs = self.block_size
        scalars[0, :count] = [e.token_ids[0] for e in entries]
        scalars[1, :count] = [e.start_pos for e in entries]
        scalars[2, :count] = [e.block_table[e.start_pos // bs] * bs + e.start_pos % bs for e in entries]
        lengths = scalars[3].view(np.int32)
        lengths[:count] = [e.start_pos + 1 for e in entries]
        table_rows = tables[: padded * width].reshape(padded, width)
        for row, entry in enumerate(entries):
            table_rows[row, : len(entry.block_table)] = entry.block_table
            table_rows[row, len(entry.block_table) :] = self.scratch_block
        if padded > count:  # padding rows: scratch slot, one key
            scalars[0:2, count:] = 0
            scalars[2, count:] = self.scratch_block * bs
            lengths[count:padded] = 1
            table_rows[count:] = self.scratch_block
        token_ids = token_source() if token_source is not None else None
        packed.copy_(scalars_host, non_blocking=True)
        if token_ids is not None:
            buffers["token_ids"][:count].copy_(token_ids)
        buffers["block_tables"][:, :width].copy_(tables_host[: padded * width].view(padded, width), non_blocking=True)
        return self._graphs.replay(count)  # [n, V]


class _Staging:
    """Pinned host buffers for the inputs of a step of up to `max_width` rows, two sets used in turn (a set is
    written again only after the step that read it has returned its tokens, which waited for its copies).
    Each buffer is a pinned tensor and a numpy view of the same memory (numpy fills it from lists faster)."""

    def __init__(self, max_width: int, max_blocks: int) -> None:
        self._sets = []
        for _ in range(2):
            scalars = torch.zeros(4 * max_width, dtype=torch.int64).pin_memory()
            tables = torch.zeros(max_width * max_blocks, dtype=torch.int32).pin_memory()
            self._sets.append((scalars, tables, scalars.numpy(), tables.numpy()))
        self._turn = 0

    def next_host_buffers(self, width: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
        """(scalars [4, width] int64, flat tables int32) as pinned tensors, then as numpy views."""
        self._turn ^= 1
        scalars, tables, scalars_np, tables_np = self._sets[self._turn]
        size = 4 * width
        return scalars[:size].view(4, width), tables, scalars_np[:size].reshape(4, width), tables_np
