"""Decode steps of the torch runner on CUDA, captured as CUDA graphs (one per batch size).

A decode-only batch of n sequences replays the graph of the smallest captured size >= n. Its
static inputs are filled from the host in one copy per tensor; the rows past n are padding: token
0 at position 0 writing its KV to the scratch block (a block the engine never hands out) and
attending only to that slot. The graph returns float32 logits [padded, V]; sampling runs after it.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        self._graphs = CudaGraphSteps(self._step, self._make_inputs, batch_sizes)
        self.max_batch_size = self._graphs.batch_sizes[-1]

    @property
    def batch_sizes(self) -> list[int]:
        return list(self._graphs.batch_sizes)

    def _make_inputs(self, batch: int) -> dict[str, torch.Tensor]:
        int64 = dict(dtype=torch.int64, device=self.device)
        int32 = dict(dtype=torch.int32, device=self.device)
        return {
            "token_ids": torch.zeros(batch, **int64),                                          # [B]
            "positions": torch.zeros(batch, **int64),                                          # [B]
            "slot_mapping": torch.full((batch,), self.scratch_block * self.block_size, **int64),  # [B]
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
        width = max(len(e.block_table) for e in entries)
        bs = self.block_size
        scalars = torch.tensor(
            [[e.token_ids[0] for e in entries],
             [e.start_pos for e in entries],
             [e.block_table[e.start_pos // bs] * bs + e.start_pos % bs for e in entries],
             [e.start_pos + 1 for e in entries]],
            dtype=torch.int64,
        ).pin_memory()                                                                        # [4, n]
        tables = torch.tensor(
            [list(e.block_table) + [self.scratch_block] * (width - len(e.block_table)) for e in entries],
            dtype=torch.int32,
        ).pin_memory()                                                                        # [n, width]
        on_device = scalars.to(self.device, non_blocking=True)
        buffers["token_ids"][:count].copy_(on_device[0])
        buffers["positions"][:count].copy_(on_device[1])
        buffers["slot_mapping"][:count].copy_(on_device[2])
        buffers["seq_lens"][:count].copy_(on_device[3])
        buffers["block_tables"][:count, :width].copy_(tables, non_blocking=True)
        if padded > count:                                 # padding rows: scratch slot, one key
            buffers["token_ids"][count:].zero_()
            buffers["positions"][count:].zero_()
            buffers["slot_mapping"][count:].fill_(self.scratch_block * bs)
            buffers["seq_lens"][count:].fill_(1)
            buffers["block_tables"][count:, 0].fill_(self.scratch_block)
        return self._graphs.replay(count)                                                     # [n, V]
