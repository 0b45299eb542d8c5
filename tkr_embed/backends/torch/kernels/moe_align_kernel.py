"""`moe_align.align_pairs_to_experts` in one Triton program, for up to ALIGN_KERNEL_MAX_PAIRS pairs.

Two passes over the pairs, CHUNK of them at a time: the first counts each expert's pairs, which give the
padded block starts (a prefix sum); the second finds each pair's rank among the earlier pairs of its
expert (a stable sort: a prefix sum down the chunk's [pairs, experts] one-hot, plus the counts of the
chunks before) and stores it at its expert's start + rank, after the padding rows were stored. Then
each block's expert. One launch where the torch version takes ~17 on CUDA: at a 1,000-token prefill
that is ~400 launches (several ms of host time) fewer. (The rank was first found by comparing every
pair with every earlier one, [256, 256]: 18 us a layer on an H100 at 64 tokens, 5% of the decode step.)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.moe_align import ALIGN_KERNEL_MAX_PAIRS, ExpertBlocks, max_expert_blocks
from tkr_embed.backends.torch.kernels.pdl import interpreting, pdl_launch, wait_for_previous_kernel

DYNAMIC_BOUNDS = True  # on CUDA the loops stop at the batch's last chunk
# 4 warps are faster than 8 at every size; H100, us, 8 / 4 warps: 256 pairs 4.38 / 4.05, 1,024 pairs
# 13.42 / 9.60, 4,096 pairs 49.84 / 32.39, 16,384 pairs 200.7 / 129.8. One count for every batch: num_warps is
# part of the binary (no compile mid-serving)
NUM_WARPS = 4


@triton.jit
def _count_chunk(ids_ptr, i, P, counts, E_PAD: tl.constexpr, CHUNK: tl.constexpr):
    """counts [E] + each expert's pairs among chunk i of the pairs."""
    pair = i * CHUNK + tl.arange(0, CHUNK)
    expert = tl.load(ids_ptr + pair, mask=pair < P, other=-1).to(tl.int32)
    return counts + tl.sum((expert[:, None] == tl.arange(0, E_PAD)[None, :]).to(tl.int32), axis=0)


@triton.jit
def _pad_chunk(sorted_ptr, i, P, NUM_SLOTS, CHUNK: tl.constexpr):
    """Chunk i of the slots: padding rows (the pair id P)."""
    slot = i * CHUNK + tl.arange(0, CHUNK)
    tl.store(sorted_ptr + slot, tl.zeros((CHUNK,), dtype=tl.int32) + P, mask=slot < NUM_SLOTS)


@triton.jit
def _place_chunk(ids_ptr, sorted_ptr, i, P, earlier, padded_start, E_PAD: tl.constexpr, CHUNK: tl.constexpr):
    """Store chunk i's pairs at their expert's start + rank; -> earlier [E] + the chunk's pairs of each expert."""
    pair = i * CHUNK + tl.arange(0, CHUNK)
    expert = tl.load(ids_ptr + pair, mask=pair < P, other=-1).to(tl.int32)
    one_hot = (expert[:, None] == tl.arange(0, E_PAD)[None, :]).to(tl.int32)  # [C, E]
    # pairs of each expert up to and including this one; at its own expert that is its rank + 1
    seen = tl.cumsum(one_hot, axis=0) + earlier[None, :]
    dest = tl.sum(one_hot * (padded_start[None, :] + seen - 1), axis=1)  # [C]
    tl.store(sorted_ptr + dest, pair, mask=pair < P)
    return earlier + tl.sum(one_hot, axis=0)


@triton.jit
def _block_expert_chunk(block_expert_ptr, i, E, NUM_BLOCKS, padded_end, BLOCK_M: tl.constexpr, CHUNK: tl.constexpr):
    """The expert of each block of chunk i: how many experts' padded ranges end at or before its first row."""
    block = i * CHUNK + tl.arange(0, CHUNK)
    block_expert = tl.sum((padded_end[None, :] <= (block * BLOCK_M)[:, None]).to(tl.int32), axis=1)
    block_expert = tl.where(block_expert < E, block_expert, -1)
    tl.store(block_expert_ptr + block, block_expert, mask=block < NUM_BLOCKS)


@triton.jit(do_not_specialize=["P", "NUM_SLOTS", "NUM_BLOCKS"])  # one binary per expert count and block size
def _align_pairs_kernel(
    ids_ptr,
    sorted_ptr,
    block_expert_ptr,
    P,
    E,
    NUM_SLOTS,
    NUM_BLOCKS,
    E_PAD: tl.constexpr,
    CHUNK: tl.constexpr,
    PAIR_CHUNKS: tl.constexpr,
    SLOT_CHUNKS: tl.constexpr,
    BLOCK_CHUNKS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    DYNAMIC: tl.constexpr,
    PDL: tl.constexpr,
):
    # DYNAMIC (CUDA): each loop ends at the batch's last chunk, a bound computed at run time. Otherwise (Triton's
    # interpreter, which takes only constant loop bounds) the loops run to bounds fixed per binary and skip the
    # chunks past the batch, which is slower: at 64 tokens on an H100 10.5 us against 4.4
    wait_for_previous_kernel(PDL)
    counts = tl.zeros((E_PAD,), dtype=tl.int32)
    if DYNAMIC:
        for i in range(tl.cdiv(P, CHUNK)):
            counts = _count_chunk(ids_ptr, i, P, counts, E_PAD, CHUNK)
    else:
        for i in range(PAIR_CHUNKS):
            if i * CHUNK < P:
                counts = _count_chunk(ids_ptr, i, P, counts, E_PAD, CHUNK)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    padded_end = tl.cumsum(padded, axis=0)  # inclusive
    padded_start = padded_end - padded
    if DYNAMIC:  # every slot a padding row first
        for i in range(tl.cdiv(NUM_SLOTS, CHUNK)):
            _pad_chunk(sorted_ptr, i, P, NUM_SLOTS, CHUNK)
    else:
        for i in range(SLOT_CHUNKS):
            if i * CHUNK < NUM_SLOTS:
                _pad_chunk(sorted_ptr, i, P, NUM_SLOTS, CHUNK)
    tl.debug_barrier()  # ... before the pairs land on their slots
    earlier = tl.zeros((E_PAD,), dtype=tl.int32)  # each expert's pairs in the chunks before
    if DYNAMIC:
        for i in range(tl.cdiv(P, CHUNK)):
            earlier = _place_chunk(ids_ptr, sorted_ptr, i, P, earlier, padded_start, E_PAD, CHUNK)
    else:
        for i in range(PAIR_CHUNKS):
            if i * CHUNK < P:
                earlier = _place_chunk(ids_ptr, sorted_ptr, i, P, earlier, padded_start, E_PAD, CHUNK)
    if DYNAMIC:
        for i in range(tl.cdiv(NUM_BLOCKS, CHUNK)):
            _block_expert_chunk(block_expert_ptr, i, E, NUM_BLOCKS, padded_end, BLOCK_M, CHUNK)
    else:
        for i in range(BLOCK_CHUNKS):
            if i * CHUNK < NUM_BLOCKS:
                _block_expert_chunk(block_expert_ptr, i, E, NUM_BLOCKS, padded_end, BLOCK_M, CHUNK)


def align_pairs_kernel(topk_ids: torch.Tensor, num_experts: int, block_m: int) -> ExpertBlocks:
    """align_pairs_to_experts in one Triton program (up to ALIGN_KERNEL_MAX_PAIRS pairs)."""
    expert_of_pair = topk_ids.reshape(-1).contiguous()
    num_pairs = expert_of_pair.numel()
    if num_pairs > ALIGN_KERNEL_MAX_PAIRS:
        raise ValueError(f"{num_pairs} pairs: the one-program alignment takes at most {ALIGN_KERNEL_MAX_PAIRS}")
    num_blocks = max_expert_blocks(num_pairs, num_experts, block_m)
    sorted_pair_ids = torch.empty(num_blocks * block_m, dtype=torch.int32, device=topk_ids.device)
    block_expert = torch.empty(num_blocks, dtype=torch.int32, device=topk_ids.device)
    e_pad = max(16, triton.next_power_of_2(num_experts))
    chunk = max(16, 8192 // e_pad)  # a [chunk, experts] one-hot: 64 int32 a thread
    most_blocks = max_expert_blocks(ALIGN_KERNEL_MAX_PAIRS, num_experts, block_m)
    _align_pairs_kernel[(1,)](
        expert_of_pair,
        sorted_pair_ids,
        block_expert,
        num_pairs,
        num_experts,
        num_blocks * block_m,
        num_blocks,
        E_PAD=e_pad,
        CHUNK=chunk,
        PAIR_CHUNKS=triton.cdiv(ALIGN_KERNEL_MAX_PAIRS, chunk),
        SLOT_CHUNKS=triton.cdiv(most_blocks * block_m, chunk),
        BLOCK_CHUNKS=triton.cdiv(most_blocks, chunk),
        BLOCK_M=block_m,
        DYNAMIC=DYNAMIC_BOUNDS and expert_of_pair.is_cuda and not interpreting(),
        num_warps=NUM_WARPS,
        **pdl_launch(expert_of_pair),
    )
    return ExpertBlocks(sorted_pair_ids, block_expert, num_pairs, block_m)
