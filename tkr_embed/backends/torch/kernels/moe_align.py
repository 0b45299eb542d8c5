"""Group (token, expert) pairs by expert into fixed-size row blocks, without a host sync.

The grouped MXFP4 kernels run one program per (row block, column tile); every row of a block uses
the same expert, so each program reads one expert's weight tile once for up to `block_m` rows.
All shapes depend only on (num_pairs, num_experts, block_m), so the result is CUDA-graph safe.

Two implementations of one contract: torch operations (any size; on CUDA ~17 launches), and for up to
ALIGN_KERNEL_MAX_PAIRS pairs one Triton program (`align_pairs_kernel`), which a decode step of 33-64
sequences could use instead. The kernel is checked against the torch version under Triton's
interpreter; it is not yet the default on CUDA (ALIGN_KERNEL_ON_CUDA) until a GPU run has timed it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

ALIGN_KERNEL_MAX_PAIRS = 256
ALIGN_KERNEL_ON_CUDA = False


@dataclass(frozen=True)
class ExpertBlocks:
    """Pairs sorted by expert and padded to `block_m` rows per expert.

    sorted_pair_ids [num_blocks * block_m] int32: pair index (token * top_k + slot), or
        `num_pairs` for a padding row.
    block_expert [num_blocks] int32: the expert of each block, or -1 for an unused block.
    """

    sorted_pair_ids: torch.Tensor
    block_expert: torch.Tensor
    num_pairs: int
    block_m: int


def max_expert_blocks(num_pairs: int, num_experts: int, block_m: int) -> int:
    """Upper bound on the row blocks any routing of `num_pairs` pairs can need."""
    return -(-num_pairs // block_m) + min(num_experts, num_pairs)


def align_pairs_to_experts(topk_ids: torch.Tensor, num_experts: int, block_m: int,
                           use_kernel: bool | None = None) -> ExpertBlocks:
    """topk_ids [T, k] -> pairs grouped by expert in blocks of `block_m` rows.

    use_kernel: the one-program Triton version (None: on CUDA when ALIGN_KERNEL_ON_CUDA and the pairs fit).
    """
    if use_kernel is None:
        use_kernel = ALIGN_KERNEL_ON_CUDA and topk_ids.is_cuda and topk_ids.numel() <= ALIGN_KERNEL_MAX_PAIRS
    if use_kernel:
        return align_pairs_kernel(topk_ids, num_experts, block_m)
    device = topk_ids.device
    expert_of_pair = topk_ids.reshape(-1).to(torch.int64)                       # [P]
    num_pairs = expert_of_pair.numel()
    num_blocks = max_expert_blocks(num_pairs, num_experts, block_m)

    counts = torch.zeros(num_experts, dtype=torch.int64, device=device)
    counts.scatter_add_(0, expert_of_pair, torch.ones_like(expert_of_pair))      # [E]
    padded = (counts + block_m - 1) // block_m * block_m                         # [E]
    padded_end = torch.cumsum(padded, 0)                                         # [E] inclusive
    padded_start = padded_end - padded                                           # [E]
    start = torch.cumsum(counts, 0) - counts                                     # [E]

    order = torch.argsort(expert_of_pair, stable=True)                           # [P] pair ids by expert
    sorted_expert = expert_of_pair[order]                                        # [P]
    rank = torch.arange(num_pairs, device=device) - start[sorted_expert]         # [P] rank within expert
    dest = padded_start[sorted_expert] + rank                                    # [P]

    sorted_pair_ids = torch.full((num_blocks * block_m,), num_pairs, dtype=torch.int32, device=device)
    sorted_pair_ids.scatter_(0, dest, order.to(torch.int32))

    block_row = torch.arange(num_blocks, device=device) * block_m                # [NB]
    block_expert = torch.searchsorted(padded_end, block_row, right=True)         # [NB] in 0..E
    block_expert = torch.where(block_expert < num_experts, block_expert, -1).to(torch.int32)
    return ExpertBlocks(sorted_pair_ids, block_expert, num_pairs, block_m)


@triton.jit
def _align_pairs_kernel(ids_ptr, sorted_ptr, block_expert_ptr, P, E, NUM_SLOTS, NUM_BLOCKS,
                        P_PAD: tl.constexpr, E_PAD: tl.constexpr, Q_BLOCK: tl.constexpr, SLOTS_PAD: tl.constexpr,
                        NB_PAD: tl.constexpr, BLOCK_M: tl.constexpr):
    offs_p = tl.arange(0, P_PAD)
    p_valid = offs_p < P
    expert = tl.load(ids_ptr + offs_p, mask=p_valid, other=0).to(tl.int32)                      # [P]
    offs_e = tl.arange(0, E_PAD)
    is_expert = (expert[:, None] == offs_e[None, :]) & p_valid[:, None]                           # [P, E]
    counts = tl.sum(is_expert.to(tl.int32), axis=0)                                                # [E]
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    padded_end = tl.cumsum(padded, axis=0)                                                         # inclusive
    padded_start = padded_end - padded
    # rank of each pair among the earlier pairs of its expert (a stable sort), Q_BLOCK pairs at a time
    rank = tl.zeros((P_PAD,), dtype=tl.int32)
    for q0 in range(0, P_PAD, Q_BLOCK):
        offs_q = q0 + tl.arange(0, Q_BLOCK)
        expert_q = tl.load(ids_ptr + offs_q, mask=offs_q < P, other=-1).to(tl.int32)
        earlier = (expert[:, None] == expert_q[None, :]) & (offs_q[None, :] < offs_p[:, None])
        rank += tl.sum(earlier.to(tl.int32), axis=1)
    dest = tl.sum(tl.where(is_expert, padded_start[None, :], 0), axis=1) + rank                     # [P]
    offs_s = tl.arange(0, SLOTS_PAD)
    tl.store(sorted_ptr + offs_s, tl.zeros((SLOTS_PAD,), dtype=tl.int32) + P, mask=offs_s < NUM_SLOTS)
    tl.debug_barrier()                     # the padding is written before the pairs land on it
    tl.store(sorted_ptr + dest, offs_p, mask=p_valid)
    offs_b = tl.arange(0, NB_PAD)
    # the expert of block b: how many experts' padded ranges end at or before its first row
    block_expert = tl.sum((padded_end[None, :] <= (offs_b * BLOCK_M)[:, None]).to(tl.int32), axis=1)
    block_expert = tl.where(block_expert < E, block_expert, -1)
    tl.store(block_expert_ptr + offs_b, block_expert, mask=offs_b < NUM_BLOCKS)


def align_pairs_kernel(topk_ids: torch.Tensor, num_experts: int, block_m: int) -> ExpertBlocks:
    """align_pairs_to_experts in one Triton program (up to ALIGN_KERNEL_MAX_PAIRS pairs)."""
    expert_of_pair = topk_ids.reshape(-1).contiguous()
    num_pairs = expert_of_pair.numel()
    if num_pairs > ALIGN_KERNEL_MAX_PAIRS:
        raise ValueError(f"{num_pairs} pairs: the one-program alignment takes at most {ALIGN_KERNEL_MAX_PAIRS}")
    num_blocks = max_expert_blocks(num_pairs, num_experts, block_m)
    sorted_pair_ids = torch.empty(num_blocks * block_m, dtype=torch.int32, device=topk_ids.device)
    block_expert = torch.empty(num_blocks, dtype=torch.int32, device=topk_ids.device)
    p_pad = max(16, triton.next_power_of_2(num_pairs))
    _align_pairs_kernel[(1,)](
        expert_of_pair, sorted_pair_ids, block_expert, num_pairs, num_experts, num_blocks * block_m, num_blocks,
        P_PAD=p_pad, E_PAD=max(16, triton.next_power_of_2(num_experts + 1)), Q_BLOCK=min(64, p_pad),
        SLOTS_PAD=triton.next_power_of_2(num_blocks * block_m), NB_PAD=max(16, triton.next_power_of_2(num_blocks)),
        BLOCK_M=block_m, num_warps=8,
    )
    return ExpertBlocks(sorted_pair_ids, block_expert, num_pairs, block_m)
