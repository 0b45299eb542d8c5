"""Decode steps of the torch runner on CUDA, captured as CUDA graphs (one per batch size).

A decode-only batch of n sequences replays the graph of the smallest captured size >= n. Its
static inputs live in pinned host mirrors: a step writes its numbers there and sends them in one
copy (token ids, positions, slots, lengths) plus the block-table entries that changed since the
graph last ran. The rows past n are padding: token 0 at position 0 writing its KV to the scratch
block (a block the engine never hands out) and attending only to that slot. The graph returns
float32 logits [padded, V]; sampling runs after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tkr_embed.backends.torch.attention import AttentionMetadata
from tkr_embed.backends.torch.cuda_graphs import CudaGraphSteps
from tkr_embed.engine.runner import BatchEntry

DEFAULT_GRAPH_BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64)


@dataclass
class _Staging:
    """Pinned host mirrors of one graph's inputs, so a step writes numbers, not new tensors.

    `tables[row]` is the block table the device buffer holds in row `row` (columns past its length
    are stale and never read); rows at or past `used` are padding.
    """

    scalars_pinned: torch.Tensor      # [4, B] int64
    scalars_np: np.ndarray
    scalars_device: torch.Tensor      # the graph's [4, B] input
    tables_pinned: torch.Tensor       # [B, max_blocks] int32
    tables_np: np.ndarray
    tables: list[list[int]]
    done: torch.cuda.Event
    used: int = 0

    @classmethod
    def create(cls, inputs: dict[str, torch.Tensor], scratch_block: int) -> _Staging:
        scalars = inputs["scalars"].cpu().pin_memory()
        tables = inputs["block_tables"].cpu().pin_memory()
        done = torch.cuda.Event()
        done.record()
        return cls(scalars, scalars.numpy(), inputs["scalars"], tables, tables.numpy(),
                   [[scratch_block] for _ in range(tables.shape[0])], done)


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
        self._graphs = CudaGraphSteps(self._step, self._make_inputs, batch_sizes)
        self.max_batch_size = self._graphs.batch_sizes[-1]
        self._staging = {size: _Staging.create(self._graphs.static_inputs(size), scratch_block)
                         for size in self._graphs.batch_sizes}

    @property
    def batch_sizes(self) -> list[int]:
        return list(self._graphs.batch_sizes)

    def _make_inputs(self, batch: int) -> dict[str, torch.Tensor]:
        int64 = dict(dtype=torch.int64, device=self.device)
        int32 = dict(dtype=torch.int32, device=self.device)
        scalars = torch.tensor([[0], [0], [self.scratch_block * self.block_size], [1]], **int64).repeat(1, batch)
        return {
            "scalars": scalars,                            # [4, B]: token ids, positions, slots, seq lens (int64)
            "token_ids": scalars[0],                                                           # [B] views
            "positions": scalars[1],
            "slot_mapping": scalars[2],
            "seq_lens": torch.ones(batch, **int32),                                            # [B]
            "block_tables": torch.full((batch, self.max_blocks_per_seq), self.scratch_block, **int32),
            "query_start_loc": torch.arange(batch + 1, **int32),                               # [B+1]
        }

    def _step(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = inputs["token_ids"].shape[0]
        # Host lists are placeholders: the CUDA kernels read only the tensors.
        metadata = AttentionMetadata(
            slot_mapping=inputs["slot_mapping"], query_start_loc=inputs["query_start_loc"],
            seq_lens=inputs["seq_lens"], block_tables=inputs["block_tables"],
            query_lens=[1] * batch, seq_lens_list=[1] * batch, start_positions=[0] * batch,
            block_tables_list=[[self.scratch_block]] * batch, block_size=self.block_size,
            max_query_len=1, max_seq_len=1, is_decode_only=True,
        )
        hidden = self.model(inputs["token_ids"], inputs["positions"], self.kv_caches, metadata)   # [B, D]
        return self.model.compute_logits(hidden)                                               # [B, V] fp32

    def fits(self, entries: Sequence[BatchEntry]) -> bool:
        """True for a batch this object can run: only single-token entries, at most the largest size."""
        return 0 < len(entries) <= self.max_batch_size and all(
            len(e.token_ids) == 1 and e.sample and len(e.block_table) <= self.max_blocks_per_seq for e in entries
        )

    def logits(self, entries: Sequence[BatchEntry]) -> torch.Tensor:
        """Replay the decode step for `entries` (all single-token); -> [n, V] float32."""
        count = len(entries)
        padded = self._graphs.padded_size(count)
        buffers = self._graphs.static_inputs(count)
        staging = self._staging[padded]
        staging.done.synchronize()                         # the last copy out of the pinned buffers is over
        bs = self.block_size
        host = staging.scalars_np                          # [4, padded] int64, pinned
        host[0, :count] = [e.token_ids[0] for e in entries]
        host[1, :count] = [e.start_pos for e in entries]
        host[2, :count] = [e.block_table[e.start_pos // bs] * bs + e.start_pos % bs for e in entries]
        host[3, :count] = [e.start_pos + 1 for e in entries]
        if staging.used > count:                           # rows that served sequences before: padding again
            host[0, count:staging.used] = 0
            host[1, count:staging.used] = 0
            host[2, count:staging.used] = self.scratch_block * bs
            host[3, count:staging.used] = 1
        device_tables = buffers["block_tables"]
        for row in range(count, staging.used):             # padding rows attend to the scratch block only
            if staging.tables[row] != [self.scratch_block]:
                staging.tables_np[row, 0] = self.scratch_block
                device_tables[row, :1].copy_(staging.tables_pinned[row, :1], non_blocking=True)
                staging.tables[row] = [self.scratch_block]
        staging.used = count
        for row, entry in enumerate(entries):              # block tables change rarely: copy only what changed
            table, known = entry.block_table, staging.tables[row]
            if table == known:
                continue
            first = len(known) if len(table) > len(known) and table[:len(known)] == known else 0
            staging.tables_np[row, first:len(table)] = table[first:]
            device_tables[row, first:len(table)].copy_(staging.tables_pinned[row, first:len(table)], non_blocking=True)
            staging.tables[row] = list(table)
        staging.scalars_device.copy_(staging.scalars_pinned, non_blocking=True)     # one copy of [4, padded]
        buffers["seq_lens"].copy_(staging.scalars_device[3])
        staging.done.record()
        return self._graphs.replay(count)                                                     # [n, V]
