"""`moe_align.align_pairs_to_experts` in one Triton program, for up to ALIGN_KERNEL_MAX_PAIRS pairs.

The pairs are read CHUNK at a time, twice: first the counts per expert, whence the padded block starts
(a prefix sum); then each pair's rank among the earlier pairs of its expert (a running count per expert
plus a prefix sum within the chunk: a stable sort). The padding rows are stored before the pairs, then
each block's expert is found. One launch where the torch version takes ~17 on CUDA: at a 1,000-token
prefill that is ~400 launches of host time a step, which the prefill is bound by.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.moe_align import ALIGN_KERNEL_MAX_PAIRS, ExpertBlocks, max_expert_blocks
from tkr_embed.backends.torch.kernels.pdl import pdl_launch, wait_for_previous_kernel

CHUNK = 256


@triton.jit
def _align_pairs_kernel(ids_ptr, sorted_ptr, block_expert_ptr, P, E, NUM_SLOTS, NUM_BLOCKS,
                        E_PAD: tl.constexpr, CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, PDL: tl.constexpr):
    wait_for_previous_kernel(PDL)
    offs_e = tl.arange(0, E_PAD)
    offs_c = tl.arange(0, CHUNK)
    counts = tl.zeros((E_PAD,), dtype=tl.int32)
    for c0 in range(0, P, CHUNK):
        expert = tl.load(ids_ptr + c0 + offs_c, mask=c0 + offs_c < P, other=-1).to(tl.int32)
        counts += tl.sum((expert[:, None] == offs_e[None, :]).to(tl.int32), axis=0)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    padded_end = tl.cumsum(padded, axis=0)                                                         # inclusive
    padded_start = padded_end - padded
    for s0 in range(0, NUM_SLOTS, CHUNK):
        tl.store(sorted_ptr + s0 + offs_c, tl.zeros((CHUNK,), dtype=tl.int32) + P, mask=s0 + offs_c < NUM_SLOTS)
    tl.debug_barrier()                     # the padding is written before the pairs land on it
    before = tl.zeros((E_PAD,), dtype=tl.int32)          # pairs of each expert in the earlier chunks
    for c0 in range(0, P, CHUNK):
        pair = c0 + offs_c
        valid = pair < P
        expert = tl.load(ids_ptr + pair, mask=valid, other=-1).to(tl.int32)
        is_expert = (expert[:, None] == offs_e[None, :]).to(tl.int32)                              # [C, E]
        rank = tl.cumsum(is_expert, axis=0) - 1 + (before + padded_start)[None, :]                  # [C, E]
        dest = tl.sum(tl.where(is_expert == 1, rank, 0), axis=1)                                     # [C]
        tl.store(sorted_ptr + dest, pair, mask=valid)
        before += tl.sum(is_expert, axis=0)
    for b0 in range(0, NUM_BLOCKS, CHUNK):
        blocks = b0 + offs_c
        # the expert of block b: how many experts' padded ranges end at or before its first row
        block_expert = tl.sum((padded_end[None, :] <= (blocks * BLOCK_M)[:, None]).to(tl.int32), axis=1)
        block_expert = tl.where(block_expert < E, block_expert, -1)
        tl.store(block_expert_ptr + blocks, block_expert, mask=blocks < NUM_BLOCKS)


def align_pairs_kernel(topk_ids: torch.Tensor, num_experts: int, block_m: int) -> ExpertBlocks:
    """align_pairs_to_experts in one Triton program (up to ALIGN_KERNEL_MAX_PAIRS pairs)."""
    expert_of_pair = topk_ids.reshape(-1).contiguous()
    num_pairs = expert_of_pair.numel()
    if num_pairs > ALIGN_KERNEL_MAX_PAIRS:
        raise ValueError(f"{num_pairs} pairs: the one-program alignment takes at most {ALIGN_KERNEL_MAX_PAIRS}")
    num_blocks = max_expert_blocks(num_pairs, num_experts, block_m)
    sorted_pair_ids = torch.empty(num_blocks * block_m, dtype=torch.int32, device=topk_ids.device)
    block_expert = torch.empty(num_blocks, dtype=torch.int32, device=topk_ids.device)
    _align_pairs_kernel[(1,)](
        expert_of_pair, sorted_pair_ids, block_expert, num_pairs, num_experts, num_blocks * block_m, num_blocks,
        E_PAD=max(16, triton.next_power_of_2(num_experts + 1)), CHUNK=CHUNK, BLOCK_M=block_m, num_warps=8,
        **pdl_launch(expert_of_pair),
    )
    return ExpertBlocks(sorted_pair_ids, block_expert, num_pairs, block_m)
