"""MXFP4 MoE for prefill-sized batches: pairs sorted by expert into row blocks, one grouped GEMM per projection.

`moe_align.align_pairs_to_experts` groups the (token, expert) pairs into blocks of BLOCK_M rows of
one expert; program (block, column tile) multiplies its rows with that expert's weight tile
(`mxfp4_tile.expert_tile`), so each weight tile is dequantized once for up to BLOCK_M rows.

1. gate_up: x[token] @ W_gate_up[e]^T + b, clamped SwiGLU -> act [P, I]
2. down: act @ W_down[e]^T + b, times the routing weight -> partials [P, D]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.expert_layout import row_start
from tkr_embed.backends.torch.kernels.moe_align import align_pairs_to_experts
from tkr_embed.backends.torch.kernels.moe_weights import MoeWeights
from tkr_embed.backends.torch.kernels.mxfp4_reference import SWIGLU_ALPHA, SWIGLU_LIMIT
from tkr_embed.backends.torch.kernels.mxfp4_tile import expert_epilogue, expert_projections, expert_tile, use_asm
from tkr_embed.backends.torch.kernels.pdl import pdl_launch, wait_for_previous_kernel

SWIGLU_LIMIT_G = tl.constexpr(SWIGLU_LIMIT)
SWIGLU_ALPHA_G = tl.constexpr(SWIGLU_ALPHA)


@dataclass(frozen=True)
class GroupedTileConfig:
    block_m: int = 128
    block_n: int = 64  # output columns per program (act's for gate_up: 2x weight rows)
    block_k: int = 64
    num_warps: int = 8
    num_stages: int = 3
    swap_ab: bool = False
    dot_scaled: bool = False
    asm: bool = True  # PTX dequantization on CUDA (see mxfp4_tile)
    align_kernel: bool | None = None  # group the pairs in one Triton program (None: moe_align's default)


GROUPED_64_MAX_TOKENS = 2048


def default_grouped_config(num_tokens: int) -> GroupedTileConfig:
    """64-row blocks up to GROUPED_64_MAX_TOKENS tokens, 128-row blocks above: the faster size on each side (H200)."""
    if num_tokens <= GROUPED_64_MAX_TOKENS:
        return GroupedTileConfig(block_m=64, block_n=64, block_k=64, num_warps=4)
    return GroupedTileConfig(block_m=128, block_n=64, block_k=64, num_warps=8)


@triton.jit(do_not_specialize=["num_pairs"])  # one binary for every batch (no compile mid-serving)
def _moe_grouped_kernel(
    a_ptr,
    sorted_pair_ids_ptr,
    block_expert_ptr,
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
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    if expert < 0:
        return
    pair = tl.load(sorted_pair_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))  # [BM]
    row_valid = pair < num_pairs
    if A_ROWS_ARE_TOKENS:
        a_row = pair // TOP_K
    else:
        a_row = pair
    a_rows = a_ptr + tl.where(row_valid, a_row, 0).to(tl.int64) * stride_a
    offs_wn = pid_n * W_ROWS + tl.arange(0, W_ROWS)
    rows = tl.where(offs_wn < N_W, offs_wn, 0).to(tl.int64)
    w_base = w_ptr + expert * stride_we + row_start(rows, stride_wn, 32, TILED)[:, None]
    s_base = s_ptr + expert * stride_se + row_start(rows, stride_sn, 2, TILED)[:, None]
    acc = expert_tile(a_rows, row_valid, w_base, s_base, K, BLOCK_M, BLOCK_K, W_ROWS, SWAP_AB, DOT_SCALED, ASM, TILED)
    expert_epilogue(
        acc,
        expert,
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
        SWIGLU_LIMIT_G,
        SWIGLU_ALPHA_G,
    )


def _launch(a, blocks, w_blocks, w_scales, bias, route_w, out, *, n_out, top_k, tokens_as_rows, swiglu, cfg, tiled):
    num_experts, n_rows, groups, _ = w_blocks.shape
    w = w_blocks.view(num_experts, n_rows, groups * 16)  # [E, N, K/2]
    w_rows = cfg.block_n * (2 if swiglu else 1)
    grid = (blocks.block_expert.numel(), triton.cdiv(n_rows, w_rows))
    _moe_grouped_kernel[grid](
        a,
        blocks.sorted_pair_ids,
        blocks.block_expert,
        w,
        w_scales,
        bias,
        route_w if route_w is not None else bias,
        out,
        blocks.num_pairs,
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
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
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


def mxfp4_moe_grouped_partials(
    hidden: torch.Tensor,  # [T, D] bf16
    topk_ids: torch.Tensor,  # [T, k] int
    topk_weights: torch.Tensor,  # [T, k] float
    weights: MoeWeights,  # the layer's experts
    config: GroupedTileConfig | None = None,
    tiled: bool = False,  # the blocks and scales in 16-row tiles (expert_layout)
) -> torch.Tensor:
    """Experts of a large batch -> per-pair results [T, k, D] (routing weight applied), hidden's dtype."""
    top_k = topk_ids.shape[1]
    cfg = config or default_grouped_config(hidden.shape[0])
    blocks = align_pairs_to_experts(topk_ids, weights.num_experts, cfg.block_m, use_kernel=cfg.align_kernel)

    def project(a: torch.Tensor, out: torch.Tensor, route_w: torch.Tensor | None) -> None:
        gate_up = route_w is None
        _launch(
            a,
            blocks,
            *(weights.gate_up if gate_up else weights.down),
            route_w,
            out,
            n_out=out.shape[1],
            top_k=top_k,
            tokens_as_rows=gate_up,
            swiglu=gate_up,
            cfg=cfg,
            tiled=tiled,
        )

    return expert_projections(hidden, topk_ids, topk_weights, weights.intermediate_size, project)
