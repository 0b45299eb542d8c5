"""Triton MXFP4 mixture-of-experts: experts stay 4-bit in memory and are dequantized on the fly.

Two grouped GEMMs over pairs sorted by expert (moe_align):
1. gate_up: x[token] @ W_gate_up[e]^T + b, then the clamped SwiGLU in the epilogue -> act [P, I].
2. down: act @ W_down[e]^T + b, times the routing weight in the epilogue -> [P, D]; the k slots of
   each token are summed afterwards.
Each program reads one expert's weight tile once for all rows of its block, so at decode the kernel
reads exactly the active experts' 4.25-bit weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.mxfp4_reference import SWIGLU_ALPHA, SWIGLU_LIMIT
from tkr_embed.backends.torch.kernels.moe_align import align_pairs_to_experts
from tkr_embed.backends.torch.kernels.mxfp4_gemv import FP16_CODE_SCALE, _codes_to_f32, mxfp4_moe_gemv


GEMV_MAX_TOKENS = 8


@dataclass(frozen=True)
class MoeTileConfig:
    """Tile shape of both grouped GEMMs (block_n counts output columns of act / of the output)."""

    block_m: int = 16          # 0 = one program per (token, expert) pair: matrix-vector, no alignment
    block_n: int = 32
    block_k: int = 128
    num_warps: int = 4
    num_stages: int = 3


def default_tile_config(num_tokens: int, top_k: int, num_experts: int) -> MoeTileConfig:
    """Small row blocks for decode (few pairs per expert), larger ones for prefill."""
    pairs_per_expert = num_tokens * top_k / num_experts
    if num_tokens <= 2:
        return MoeTileConfig(block_m=0, block_n=16, block_k=512, num_warps=8, num_stages=3)
    if num_tokens <= GEMV_MAX_TOKENS:
        return MoeTileConfig(block_m=0, block_n=16, block_k=256, num_warps=4, num_stages=3)
    if pairs_per_expert <= 16:
        return MoeTileConfig(block_m=16, block_n=64, block_k=128, num_warps=4, num_stages=3)
    # Prefill: the >= 64-row tiles dequantize once into one interleaved bf16 tile and run one dot;
    # the 32-row decode tile's two dots lose to them from 256 tokens up (H200, 20b shape, one layer:
    # 256 tokens 2.07 -> 1.29 ms with 64 rows; 512 tokens 3.61 -> 1.52 ms with 128 rows).
    if pairs_per_expert <= 32:
        return MoeTileConfig(block_m=64, block_n=64, block_k=64, num_warps=4, num_stages=3)
    return MoeTileConfig(block_m=128, block_n=64, block_k=64, num_warps=8, num_stages=3)


SWIGLU_LIMIT_C = tl.constexpr(SWIGLU_LIMIT)
SWIGLU_ALPHA_C = tl.constexpr(SWIGLU_ALPHA)


@triton.jit
def _dequant_mxfp4(packed, scales, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """packed [BN, BK/2] uint8, scales [BN, BK/32] uint8 -> [BN, BK] bf16."""
    low = packed & 0x0F
    high = packed >> 4
    codes = tl.join(low, high).reshape(BLOCK_N, BLOCK_K).to(tl.int32)      # low nibble first
    exponent = (codes >> 1) & 3
    mantissa = codes & 1
    # e2m1 as twice its magnitude, in integers: e == 0 -> m; else (2 + m) << (e - 1)
    twice = tl.where(exponent == 0, mantissa, (2 + mantissa) << tl.maximum(exponent - 1, 0))
    twice = tl.where((codes & 8) != 0, -twice, twice)
    # E8M0 scale 2^(s - 127), halved to undo the doubling: fp32 bits (s - 1) << 23 (s >= 1)
    half_scale = ((scales.to(tl.int32) - 1) << 23).to(tl.float32, bitcast=True)     # [BN, BK/32]
    half_scale = tl.broadcast_to(half_scale[:, :, None], (BLOCK_N, BLOCK_K // 32, 32)).reshape(BLOCK_N, BLOCK_K)
    return (twice.to(tl.float32) * half_scale).to(tl.bfloat16)


@triton.jit
def _split_dot(a_rows, w_base, s_base, row_valid, acc, k0, K: tl.constexpr, BLOCK_K: tl.constexpr,
               W_ROWS: tl.constexpr):
    """Decode tiles: even and odd k of A against the low and high nibbles (no weight interleaving)."""
    offs_kb = k0 // 2 + tl.arange(0, BLOCK_K // 2)                       # byte index in the row
    kb_valid = offs_kb < K // 2
    a_mask = row_valid[:, None] & kb_valid[None, :]
    a_even = tl.load(a_rows + 2 * offs_kb[None, :], mask=a_mask, other=0.0)        # [BM, BK/2]
    a_odd = tl.load(a_rows + 2 * offs_kb[None, :] + 1, mask=a_mask, other=0.0)    # [BM, BK/2]
    packed = tl.load(w_base + offs_kb[None, :], mask=kb_valid[None, :], other=0)  # [WR, BK/2]
    offs_ks = k0 // 32 + tl.arange(0, BLOCK_K // 32)
    scale_bits = tl.load(s_base + offs_ks[None, :], mask=(offs_ks < K // 32)[None, :], other=0)
    scale = (scale_bits.to(tl.int32) << 23).to(tl.float32, bitcast=True) * FP16_CODE_SCALE   # [WR, BK/32]
    scale = tl.broadcast_to(scale[:, :, None], (W_ROWS, BLOCK_K // 32, 16)).reshape(W_ROWS, BLOCK_K // 2)
    bits = packed.to(tl.uint16)
    low, high = _codes_to_f32(bits, bits)                               # [WR, BK/2] each
    acc = tl.dot(a_even, tl.trans((low * scale).to(tl.bfloat16)), acc)  # [BM, WR]
    acc = tl.dot(a_odd, tl.trans((high * scale).to(tl.bfloat16)), acc)
    return acc


@triton.jit
def _moe_gemm_kernel(
    a_ptr,               # [rows, K] bf16: hidden (rows = tokens) or act (rows = pairs)
    sorted_pair_ids_ptr,  # [NB * BM] int32
    block_expert_ptr,    # [NB] int32
    w_ptr,               # [E, N, K/2] uint8
    s_ptr,               # [E, N, K/32] uint8
    bias_ptr,            # [E, N] bf16
    route_w_ptr,         # [P] fp32 routing weights (down only)
    out_ptr,             # [P, N_OUT] bf16
    num_pairs,
    K: tl.constexpr,
    N_W,
    N_OUT,
    stride_a,
    stride_we,
    stride_wn,
    stride_se,
    stride_sn,
    stride_be,
    stride_out,
    TOP_K: tl.constexpr,
    A_ROWS_ARE_TOKENS: tl.constexpr,
    FUSE_SWIGLU: tl.constexpr,
    APPLY_ROUTE_WEIGHT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    W_ROWS: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    if expert < 0:
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_pair_ids_ptr + offs_m)                            # [BM]
    row_valid = pair < num_pairs
    if A_ROWS_ARE_TOKENS:
        a_row = pair // TOP_K
    else:
        a_row = pair
    a_row = tl.where(row_valid, a_row, 0).to(tl.int64)

    # weight rows of this tile: with the fused SwiGLU, W_ROWS = 2 * BLOCK_N interleaved gate/up rows
    offs_wn = pid_n * W_ROWS + tl.arange(0, W_ROWS)
    n_valid = offs_wn < N_W
    offs_wn_safe = tl.where(n_valid, offs_wn, 0).to(tl.int64)

    w_base = w_ptr + expert * stride_we + offs_wn_safe[:, None] * stride_wn
    s_base = s_ptr + expert * stride_se + offs_wn_safe[:, None] * stride_sn
    acc = tl.zeros((BLOCK_M, W_ROWS), dtype=tl.float32)
    a_rows = a_ptr + a_row[:, None] * stride_a
    for k0 in range(0, K, BLOCK_K):
        if BLOCK_M >= 64:   # prefill tiles: one interleaved bf16 weight tile, one dot
            offs_k = k0 + tl.arange(0, BLOCK_K)
            a = tl.load(a_rows + offs_k[None, :], mask=row_valid[:, None] & (offs_k < K)[None, :], other=0.0)
            offs_kb = k0 // 2 + tl.arange(0, BLOCK_K // 2)
            packed = tl.load(w_base + offs_kb[None, :], mask=(offs_kb < K // 2)[None, :], other=0)   # [WR, BK/2]
            offs_ks = k0 // 32 + tl.arange(0, BLOCK_K // 32)
            scales = tl.load(s_base + offs_ks[None, :], mask=(offs_ks < K // 32)[None, :], other=127)
            acc = tl.dot(a, tl.trans(_dequant_mxfp4(packed, scales, W_ROWS, BLOCK_K)), acc)      # [BM, WR]
        else:
            acc = _split_dot(a_rows, w_base, s_base, row_valid, acc, k0, K, BLOCK_K, W_ROWS)

    bias = tl.load(bias_ptr + expert * stride_be + offs_wn_safe, mask=n_valid, other=0.0)
    acc = acc + bias.to(tl.float32)[None, :]
    if FUSE_SWIGLU:
        gate, up = tl.split(acc.reshape(BLOCK_M, BLOCK_N, 2))               # [BM, BN] each
        gate = tl.minimum(gate, SWIGLU_LIMIT_C)
        up = tl.minimum(tl.maximum(up, -SWIGLU_LIMIT_C), SWIGLU_LIMIT_C)
        result = (up + 1.0) * gate * tl.sigmoid(SWIGLU_ALPHA_C * gate)
    else:
        result = acc
    if APPLY_ROUTE_WEIGHT:
        route_w = tl.load(route_w_ptr + tl.where(row_valid, pair, 0), mask=row_valid, other=0.0)
        result = result * route_w[:, None]
    offs_on = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    out_ptrs = out_ptr + tl.where(row_valid, pair, 0).to(tl.int64)[:, None] * stride_out + offs_on[None, :]
    tl.store(out_ptrs, result.to(out_ptr.dtype.element_ty), mask=row_valid[:, None] & (offs_on < N_OUT)[None, :])


def _launch(a, blocks_info, w_blocks, w_scales, bias, route_w, out, *, n_out, top_k, tokens_as_rows, swiglu, cfg):
    num_experts, n_rows, groups, _ = w_blocks.shape
    k = groups * 32
    w = w_blocks.view(num_experts, n_rows, groups * 16)                     # [E, N, K/2]
    num_blocks = blocks_info.block_expert.numel()
    grid = (num_blocks, triton.cdiv(n_out, cfg.block_n))
    _moe_gemm_kernel[grid](
        a, blocks_info.sorted_pair_ids, blocks_info.block_expert, w, w_scales, bias, route_w, out,
        blocks_info.num_pairs, k, n_rows, n_out,
        a.stride(0), w.stride(0), w.stride(1), w_scales.stride(0), w_scales.stride(1), bias.stride(0), out.stride(0),
        TOP_K=top_k, A_ROWS_ARE_TOKENS=tokens_as_rows, FUSE_SWIGLU=swiglu, APPLY_ROUTE_WEIGHT=route_w is not None,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, W_ROWS=cfg.block_n * (2 if swiglu else 1),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )


def mxfp4_moe(
    hidden: torch.Tensor,            # [T, D] bf16
    topk_ids: torch.Tensor,          # [T, k] int
    topk_weights: torch.Tensor,      # [T, k] float
    gate_up_blocks: torch.Tensor,    # [E, 2I, D/32, 16] uint8
    gate_up_scales: torch.Tensor,    # [E, 2I, D/32] uint8
    gate_up_bias: torch.Tensor,      # [E, 2I] bf16
    down_blocks: torch.Tensor,       # [E, D, I/32, 16] uint8
    down_scales: torch.Tensor,       # [E, D, I/32] uint8
    down_bias: torch.Tensor,         # [E, D] bf16
    config: MoeTileConfig | None = None,
    residual: torch.Tensor | None = None,   # [T, D]: added to the result when given
) -> torch.Tensor:
    """Experts forward on the GPU with MXFP4 weights. -> [T, D] in hidden's dtype (+ residual)."""
    num_tokens, hidden_size = hidden.shape
    top_k = topk_ids.shape[1]
    num_experts = gate_up_blocks.shape[0]
    intermediate = gate_up_blocks.shape[1] // 2
    cfg = config or default_tile_config(num_tokens, top_k, num_experts)
    weights = (gate_up_blocks, gate_up_scales, gate_up_bias, down_blocks, down_scales, down_bias)
    if cfg.block_m == 0:   # decode: matrix-vector per pair, the k slots summed in the down kernel
        return mxfp4_moe_gemv(hidden, topk_ids, topk_weights, *weights, residual, block_n_gate_up=cfg.block_n,
                              block_n_down=cfg.block_n, block_g=cfg.block_k // 32, num_warps=cfg.num_warps)
    hidden = hidden.contiguous()
    num_pairs = num_tokens * top_k
    route_w = topk_weights.reshape(-1).to(torch.float32).contiguous()                           # [P]
    act = torch.empty(num_pairs, intermediate, dtype=hidden.dtype, device=hidden.device)        # [P, I]
    per_pair = torch.empty(num_pairs, hidden_size, dtype=hidden.dtype, device=hidden.device)    # [P, D]
    blocks_info = align_pairs_to_experts(topk_ids, num_experts, cfg.block_m)
    _launch(hidden, blocks_info, gate_up_blocks, gate_up_scales, gate_up_bias, None, act,
            n_out=intermediate, top_k=top_k, tokens_as_rows=True, swiglu=True, cfg=cfg)
    _launch(act, blocks_info, down_blocks, down_scales, down_bias, route_w, per_pair,
            n_out=hidden_size, top_k=top_k, tokens_as_rows=False, swiglu=False, cfg=cfg)
    summed = per_pair.view(num_tokens, top_k, hidden_size).sum(dim=1, dtype=torch.float32)     # [T, D]
    if residual is not None:
        summed += residual
    return summed.to(hidden.dtype)
