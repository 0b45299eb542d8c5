"""MXFP4 mixture-of-experts for long prefill chunks: dequantize a group of experts to bf16, then cuBLAS.

At hundreds of tokens every expert is busy and the grouped Triton kernel is bound by its in-loop
dequantization. Here each group of experts is expanded once to bf16 by a small Triton kernel
(bandwidth-bound), each expert's tokens are packed into a padded batch [G, M, D], and the two
projections run as batched cuBLAS GEMMs (bias in the same call); the clamped SwiGLU and the routing
weights are plain torch ops, and the k slots of each token are summed in float32 (in slot order).

It needs the per-expert token counts on the host (one sync per layer), so it serves eager prefill
only, never a captured CUDA graph. Scratch per call: the bf16 weights of one expert group (8
experts of the 20b shape: ~400 MB) plus the packed activations.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.mxfp4_reference import SWIGLU_ALPHA, SWIGLU_LIMIT

EXPERTS_PER_GROUP = 8


@triton.jit
def _dequant_rows_kernel(w_ptr, s_ptr, out_ptr, num_rows, K: tl.constexpr,
                         BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """w [rows, K/2] uint8 (low nibble = even element), s [rows, K/32] uint8 -> out [rows, K] bf16."""
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_kb = tl.program_id(1) * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)
    offs_ks = tl.program_id(1) * (BLOCK_K // 32) + tl.arange(0, BLOCK_K // 32)
    rows = offs_r.to(tl.int64)[:, None]
    r_valid = (offs_r < num_rows)[:, None]
    packed = tl.load(w_ptr + rows * (K // 2) + offs_kb[None, :], mask=r_valid & (offs_kb < K // 2)[None, :], other=0)
    scales = tl.load(s_ptr + rows * (K // 32) + offs_ks[None, :], mask=r_valid & (offs_ks < K // 32)[None, :],
                     other=127)                                                            # [BR, BK/32]
    codes = tl.join(packed & 0x0F, packed >> 4).reshape(BLOCK_R, BLOCK_K).to(tl.int32)     # [BR, BK]
    exponent = (codes >> 1) & 3
    mantissa = codes & 1
    twice = tl.where(exponent == 0, mantissa, (2 + mantissa) << tl.maximum(exponent - 1, 0))   # 2 * |value|
    twice = tl.where((codes & 8) != 0, -twice, twice)
    # 2^(s - 127) / 2 as fp32 bits (s - 1) << 23; s = 0 (2^-127) flushes to 0
    half_scale = (tl.maximum(scales.to(tl.int32) - 1, 0) << 23).to(tl.float32, bitcast=True)
    half_scale = tl.broadcast_to(half_scale[:, :, None], (BLOCK_R, BLOCK_K // 32, 32)).reshape(BLOCK_R, BLOCK_K)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    tl.store(out_ptr + rows * K + offs_k[None, :], (twice.to(tl.float32) * half_scale).to(tl.bfloat16),
             mask=r_valid & (offs_k < K)[None, :])


def dequantize_experts(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """blocks [G, N, K/32, 16] uint8, scales [G, N, K/32] uint8 -> [G, N, K] bf16."""
    num_experts, rows, groups, _ = blocks.shape
    k = groups * 32
    out = torch.empty(num_experts, rows, k, dtype=torch.bfloat16, device=blocks.device)
    total_rows = num_experts * rows
    block_r, block_k = 32, 64
    _dequant_rows_kernel[(triton.cdiv(total_rows, block_r), triton.cdiv(k, block_k))](
        blocks.reshape(total_rows, groups * 16), scales.reshape(total_rows, groups), out, total_rows,
        K=k, BLOCK_R=block_r, BLOCK_K=block_k, num_warps=4,
    )
    return out


def _swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """[..., 2I] interleaved (gate, linear) -> [..., I], computed in float32, returned in bf16."""
    gate = gate_up[..., 0::2].float().clamp(max=SWIGLU_LIMIT)
    linear = gate_up[..., 1::2].float().clamp(min=-SWIGLU_LIMIT, max=SWIGLU_LIMIT)
    return ((linear + 1) * gate * torch.sigmoid(SWIGLU_ALPHA * gate)).to(gate_up.dtype)


def mxfp4_moe_prefill(
    hidden: torch.Tensor,            # [T, D] bf16
    topk_ids: torch.Tensor,          # [T, k] int
    topk_weights: torch.Tensor,      # [T, k] float
    gate_up_blocks: torch.Tensor,    # [E, 2I, D/32, 16] uint8
    gate_up_scales: torch.Tensor,    # [E, 2I, D/32] uint8
    gate_up_bias: torch.Tensor,      # [E, 2I] bf16
    down_blocks: torch.Tensor,       # [E, D, I/32, 16] uint8
    down_scales: torch.Tensor,       # [E, D, I/32] uint8
    down_bias: torch.Tensor,         # [E, D] bf16
    residual: torch.Tensor | None = None,   # [T, D]: added to the result when given
    experts_per_group: int = EXPERTS_PER_GROUP,
) -> torch.Tensor:
    """Experts forward for a long chunk; -> [T, D] in hidden's dtype (plus residual if given)."""
    num_tokens, hidden_size = hidden.shape
    top_k = topk_ids.shape[1]
    num_experts = gate_up_blocks.shape[0]
    pair_expert = topk_ids.reshape(-1).long()                                   # [P]
    order = torch.argsort(pair_expert, stable=True)                             # [P] pairs by expert
    counts = torch.bincount(pair_expert, minlength=num_experts)                 # [E]
    sorted_expert = pair_expert[order]                                          # [P]
    first_of_expert = counts.cumsum(0) - counts                                 # [E]
    rank = torch.arange(order.numel(), device=hidden.device) - first_of_expert[sorted_expert]   # [P]
    counts_host = counts.tolist()                                               # the one host sync
    route_w = topk_weights.reshape(-1).float()                                  # [P]
    per_pair = torch.empty(order.numel(), hidden_size, dtype=torch.float32, device=hidden.device)   # [P, D]
    start = 0
    for g0 in range(0, num_experts, experts_per_group):
        g1 = min(num_experts, g0 + experts_per_group)
        group_counts = counts_host[g0:g1]
        end = start + sum(group_counts)
        if end == start:
            continue
        width = max(group_counts)
        pairs = order[start:end]                                                # [p]
        local_expert = sorted_expert[start:end] - g0                            # [p]
        local_rank = rank[start:end]                                            # [p]
        tokens = pairs // top_k                                                 # [p]
        packed = hidden.new_zeros(g1 - g0, width, hidden_size)                  # [G, M, D]
        packed[local_expert, local_rank] = hidden[tokens]
        w_gate_up = dequantize_experts(gate_up_blocks[g0:g1], gate_up_scales[g0:g1])            # [G, 2I, D]
        gate_up = torch.baddbmm(gate_up_bias[g0:g1, None, :], packed, w_gate_up.transpose(1, 2))   # [G, M, 2I]
        del w_gate_up
        act = _swiglu(gate_up)                                                                  # [G, M, I]
        w_down = dequantize_experts(down_blocks[g0:g1], down_scales[g0:g1])                    # [G, D, I]
        expert_out = torch.baddbmm(down_bias[g0:g1, None, :], act, w_down.transpose(1, 2))     # [G, M, D]
        per_pair[pairs] = expert_out[local_expert, local_rank].float() * route_w[pairs, None]    # [p, D]
        start = end
    out = per_pair.view(num_tokens, top_k, hidden_size).sum(dim=1)                             # [T, D] fp32
    if residual is not None:
        out += residual
    return out.to(hidden.dtype)
