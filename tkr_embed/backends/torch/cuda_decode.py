"""Decode steps of the torch runner on CUDA, captured as CUDA graphs (one per batch size).

A decode-only batch of n sequences replays the graph of the smallest captured size >= n. Its
static inputs are filled from pinned host buffers that keep their layout: token ids, positions, KV
slots and sequence lengths are one [4, B] int64 block (one copy, no device kernels), the block tables
a second copy. The rows past n are padding: token 0 at position 0 writing its KV to the scratch block
(a block the engine never hands out) and attending only to that slot. The graph returns float32
logits [padded, V]; sampling runs after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tkr_embed.backends.torch.attention import AttentionMetadata
from tkr_embed.backends.torch.cuda_graphs import CudaGraphSteps
from tkr_embed.engine.runner import BatchEntry

DEFAULT_GRAPH_BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64)


class CudaDecodeGraphs:
    """One captured decode step of `model` per batch size, over the runner's KV cache."""

    def __init__(
        self,
        model: torch.nn.Module,
        kv_caches: list[torch.Tensor],
        *,
        block_size: int,
        scratch_block: int,
        max_blocks_per_seq: int,
        batch_sizes: Sequence[int] = DEFAULT_GRAPH_BATCH_SIZES,
    ) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.scratch_block = scratch_block
        self.max_blocks_per_seq = max_blocks_per_seq
        self.device = model.device
        self._staging: dict[int, _Staging] = {}
        self._graphs = CudaGraphSteps(self._step, self._make_inputs, batch_sizes)
        self.max_batch_size = self._graphs.batch_sizes[-1]

    @property
    def batch_sizes(self) -> list[int]:
        return list(self._graphs.batch_sizes)

    def _make_inputs(self, batch: int) -> dict[str, torch.Tensor]:
        # rows of an even width start 16-byte aligned, as the eager step's fresh tensors do: Triton compiles
        # one binary per pointer alignment, and an eager step would otherwise compile another mid-serving
        width = batch + batch % 2
        packed = torch.zeros(4, width, dtype=torch.int64, device=self.device)  # ids, positions, slots, lens
        packed[2].fill_(self.scratch_block * self.block_size)
        packed[3].view(torch.int32)[:batch].fill_(1)
        self._staging[batch] = _Staging(packed, width, self.max_blocks_per_seq)
        return {
            "token_ids": packed[0, :batch],  # [B]
            "positions": packed[1, :batch],  # [B]
            "slot_mapping": packed[2, :batch],  # [B]
            "seq_lens": packed[3].view(torch.int32)[:batch],  # [B] int32
            "block_tables": torch.full(
                (batch, self.max_blocks_per_seq), self.scratch_block, dtype=torch.int32, device=self.device
            ),
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
        return self.model.compute_logits(hidden)  # [B, V] fp32

    def fits(self, entries: Sequence[BatchEntry]) -> bool:
        """True for a batch this object can run: only single-token entries, at most the largest size."""
        return 0 < len(entries) <= self.max_batch_size and all(
            len(e.token_ids) == 1 and e.sample and len(e.block_table) <= self.max_blocks_per_seq for e in entries
        )

    def logits(self, entries: Sequence[BatchEntry], token_source: torch.Tensor | None = None) -> torch.Tensor:
        """Replay the decode step for `entries` (all single-token); -> [n, V] float32. token_source [n]:
        the input tokens on the device (copied after the host inputs), instead of the entries'."""
        count = len(entries)
        padded = self._graphs.padded_size(count)
        buffers = self._graphs.static_inputs(count)
        staging = self._staging[padded]
        scalars_host, tables_host, scalars, tables = staging.next_host_buffers()
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
        staging.device.copy_(scalars_host, non_blocking=True)
        if token_source is not None:
            buffers["token_ids"][:count].copy_(token_source)
        buffers["block_tables"][:, :width].copy_(tables_host[: padded * width].view(padded, width), non_blocking=True)
        return self._graphs.replay(count)  # [n, V]


class _Staging:
    """Pinned host buffers of one captured batch size, two sets used in turn (a set is written again only
    after the step that read it has returned its tokens, which waited for its copies). Each buffer is
    a pinned tensor and a numpy view of the same memory (numpy fills it from lists faster)."""

    def __init__(self, device_scalars: torch.Tensor, batch: int, max_blocks: int) -> None:
        self.device = device_scalars
        self._sets = []
        for _ in range(2):
            scalars = torch.zeros(4, batch, dtype=torch.int64).pin_memory()
            tables = torch.zeros(batch * max_blocks, dtype=torch.int32).pin_memory()
            self._sets.append((scalars, tables, scalars.numpy(), tables.numpy()))
        self._turn = 0

    def next_host_buffers(self) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
        """(scalars [4, B] int64, flat tables int32) as pinned tensors, then as numpy views."""
        self._turn ^= 1
        return self._sets[self._turn]
