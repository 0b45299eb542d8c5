"""MXFP4 MoE for decode batches (up to `DECODE_MAX_PAIRS` token-expert pairs): one program per expert.

Program (expert e, column tile n) finds its own pairs in `topk_ids` (no sort, no alignment
kernel): it ranks the pairs routed to e with a prefix sum and gathers them BLOCK_M at a time, so each
active expert's weight tile is read once per step whatever the batch. Experts nobody chose return
at once. Two launches a layer:

1. gate_up: x[token] @ W_gate_up[e]^T + b, clamped SwiGLU -> act [P, I]
2. down: act[pair] @ W_down[e]^T + b, times the routing weight -> partials [P, D]

The k partials of a token are summed with the residual by the RMSNorm that follows
(`fused_ops.moe_sum_add_rms_norm`), so no per-token reduction kernel runs here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.expert_layout import row_start
from tkr_embed.backends.torch.kernels.moe_weights import MoeWeights
from tkr_embed.backends.torch.kernels.mxfp4_reference import SWIGLU_ALPHA, SWIGLU_LIMIT
from tkr_embed.backends.torch.kernels.mxfp4_tile import expert_epilogue, expert_projections, expert_tile, use_asm
from tkr_embed.backends.torch.kernels.pdl import pdl_launch, wait_for_previous_kernel

DECODE_MAX_PAIRS = 512
SWIGLU_LIMIT_D = tl.constexpr(SWIGLU_LIMIT)
SWIGLU_ALPHA_D = tl.constexpr(SWIGLU_ALPHA)


@dataclass(frozen=True)
class DecodeTileConfig:
    """Tiles of the expert-major kernels; block_n counts output columns (act's for gate_up)."""

    block_m: int = 16
    block_n_gate_up: int = 32  # W_ROWS = 64 interleaved gate/up rows
    block_n_down: int = 64
    block_k: int = 128
    num_warps: int = 4
    num_stages: int = 3
    swap_ab: bool = False  # True: weights as the left operand (wgmma from registers); measured slower
    dot_scaled: bool = False
    asm: bool = True  # PTX dequantization on CUDA (see mxfp4_tile)


def default_decode_config(num_pairs: int) -> DecodeTileConfig:
    """16 gathered rows per pass (an expert rarely has more at decode); 32 for larger batches."""
    return DecodeTileConfig(block_m=16 if num_pairs <= 128 else 32)


@triton.jit(do_not_specialize=["num_pairs"])  # one binary per P_PAD
def _moe_decode_kernel(
    a_ptr,
    ids_ptr,
    w_ptr,
    s_ptr,
    bias_ptr,
    route_w_ptr,
    out_ptr,
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
    P_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    W_ROWS: tl.constexpr,
    SWAP_AB: tl.constexpr,
    DOT_SCALED: tl.constexpr,
    ASM: tl.constexpr,
    TILED: tl.constexpr,
    PDL: tl.constexpr,
):
    wait_for_previous_kernel(PDL)
    expert = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_p = tl.arange(0, P_PAD)
    ids = tl.load(ids_ptr + offs_p, mask=offs_p < num_pairs, other=-1)
    chosen = (ids == expert).to(tl.int32)  # [P_PAD]
    count = tl.sum(chosen, axis=0)
    if count == 0:
        return
    rank = tl.cumsum(chosen, axis=0) - 1  # position among this expert's pairs

    offs_wn = pid_n * W_ROWS + tl.arange(0, W_ROWS)
    rows = tl.where(offs_wn < N_W, offs_wn, 0).to(tl.int64)
    expert64 = expert.to(tl.int64)
    w_base = w_ptr + expert64 * stride_we + row_start(rows, stride_wn, 32, TILED)[:, None]
    s_base = s_ptr + expert64 * stride_se + row_start(rows, stride_sn, 2, TILED)[:, None]
    for m0 in range(0, P_PAD, BLOCK_M):  # static bound: an expert may take every pair
        if m0 < count:
            offs_m = m0 + tl.arange(0, BLOCK_M)
            picked = (chosen[None, :] != 0) & (rank[None, :] == offs_m[:, None])  # [BM, P_PAD]
            pair = tl.sum(tl.where(picked, offs_p[None, :], 0), axis=1)  # [BM]
            row_valid = offs_m < count
            if A_ROWS_ARE_TOKENS:
                a_row = pair // TOP_K
            else:
                a_row = pair
            a_rows = a_ptr + a_row.to(tl.int64) * stride_a
            acc = expert_tile(
                a_rows, row_valid, w_base, s_base, K, BLOCK_M, BLOCK_K, W_ROWS, SWAP_AB, DOT_SCALED, ASM, TILED
            )
            expert_epilogue(
                acc,
                expert64,
                pair,
                row_valid,
                pid_n,
                bias_ptr,
                route_w_ptr,
                out_ptr,
                N_W,
                N_OUT,
                stride_be,
                stride_out,
                BLOCK_M,
                BLOCK_N,
                W_ROWS,
                SWAP_AB,
                FUSE_SWIGLU,
                APPLY_ROUTE_WEIGHT,
                SWIGLU_LIMIT_D,
                SWIGLU_ALPHA_D,
            )


def _launch(
    a, ids, w_blocks, w_scales, bias, route_w, out, *, n_out, top_k, tokens_as_rows, swiglu, block_n, cfg, tiled
):
    num_experts, n_rows, groups, _ = w_blocks.shape
    w = w_blocks.view(num_experts, n_rows, groups * 16)  # [E, N, K/2]
    num_pairs = ids.numel()
    w_rows = block_n * (2 if swiglu else 1)
    grid = (num_experts, triton.cdiv(n_rows, w_rows))
    _moe_decode_kernel[grid](
        a,
        ids,
        w,
        w_scales,
        bias,
        route_w if route_w is not None else bias,
        out,
        num_pairs,
        groups * 32,
        n_rows,
        n_out,
        a.stride(0),
        w.stride(0),
        w.stride(1),
        w_scales.stride(0),
        w_scales.stride(1),
        bias.stride(0),
        out.stride(0),
        TOP_K=top_k,
        A_ROWS_ARE_TOKENS=tokens_as_rows,
        FUSE_SWIGLU=swiglu,
        APPLY_ROUTE_WEIGHT=route_w is not None,
        P_PAD=max(16, triton.next_power_of_2(num_pairs)),
        BLOCK_M=cfg.block_m,
        BLOCK_N=block_n,
        BLOCK_K=cfg.block_k,
        W_ROWS=w_rows,
        SWAP_AB=cfg.swap_ab,
        DOT_SCALED=cfg.dot_scaled,
        ASM=cfg.asm and use_asm(a),
        TILED=tiled,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        **pdl_launch(a),
    )


def mxfp4_moe_decode_partials(
    hidden: torch.Tensor,  # [T, D] bf16
    topk_ids: torch.Tensor,  # [T, k] int
    topk_weights: torch.Tensor,  # [T, k] float
    weights: MoeWeights,  # the layer's experts
    config: DecodeTileConfig | None = None,
    tiled: bool = False,  # the blocks and scales in 16-row tiles (expert_layout)
) -> torch.Tensor:
    """Experts of a decode batch -> per-pair results [T, k, D] (routing weight applied), hidden's dtype."""
    top_k = topk_ids.shape[1]
    num_pairs = topk_ids.shape[0] * top_k
    if num_pairs > DECODE_MAX_PAIRS:
        raise ValueError(f"{num_pairs} pairs exceed the decode kernel's {DECODE_MAX_PAIRS}")
    cfg = config or default_decode_config(num_pairs)
    ids = topk_ids.reshape(-1).to(torch.int32)  # [P]

    def project(a: torch.Tensor, out: torch.Tensor, route_w: torch.Tensor | None) -> None:
        gate_up = route_w is None
        _launch(
            a,
            ids,
            *(weights.gate_up if gate_up else weights.down),
            route_w,
            out,
            n_out=out.shape[1],
            top_k=top_k,
            tokens_as_rows=gate_up,
            swiglu=gate_up,
            block_n=cfg.block_n_gate_up if gate_up else cfg.block_n_down,
            cfg=cfg,
            tiled=tiled,
        )

    return expert_projections(hidden, topk_ids, topk_weights, weights.intermediate_size, project)
