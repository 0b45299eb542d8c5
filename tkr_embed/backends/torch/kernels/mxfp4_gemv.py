"""Triton MXFP4 matrix-vector kernels for the MoE at decode (a few tokens, each expert read once per pair).

Dequantization is `mxfp4_tile.e2m1_pairs`: bf16 values with the E8M0 scale already applied (a few PTX
instructions per 8 codes on CUDA), widened to fp32 and multiplied with the activations.

- `gemv_gate_up`: one program per (pair, tile of output columns): x[token] @ W_gate_up[e]^T + b, then
  the clamped SwiGLU -> act [P, I].
- `gemv_down`: one program per (pair, tile of columns): w_pair * (act[pair] @ W_down[e]^T + b) ->
  partials [P, D]; the k partials of a token are summed by the RMSNorm that follows.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.mxfp4_reference import SWIGLU_ALPHA, SWIGLU_LIMIT
from tkr_embed.backends.torch.kernels.mxfp4_tile import e2m1_pairs, expert_projections, use_asm

SWIGLU_LIMIT_G = tl.constexpr(SWIGLU_LIMIT)
SWIGLU_ALPHA_G = tl.constexpr(SWIGLU_ALPHA)


@triton.jit
def _row_dot(a_base, w_base, s_base, row_valid, G: tl.constexpr, BLOCK_G: tl.constexpr, W_ROWS: tl.constexpr,
             ASM: tl.constexpr):
    """sum over K of a[k] * W[row, k] for W_ROWS rows; a_base -> [K] bf16, w_base [WR, 1] -> row bytes.

    Returns [W_ROWS] fp32.
    """
    acc = tl.zeros((W_ROWS, BLOCK_G, 16), dtype=tl.float32)
    offs_b = tl.arange(0, 16)
    for g0 in range(0, G, BLOCK_G):
        offs_g = g0 + tl.arange(0, BLOCK_G)                                   # [BG]
        g_valid = offs_g < G
        byte_idx = offs_g[:, None] * 16 + offs_b[None, :]                     # [BG, 16]
        mask = row_valid[:, None, None] & g_valid[None, :, None]
        packed = tl.load(w_base[:, :, None] + byte_idx[None, :, :], mask=mask, other=0)   # [WR, BG, 16] u8
        scale = tl.load(s_base + offs_g[None, :], mask=row_valid[:, None] & g_valid[None, :], other=127)  # [WR, BG]
        pairs = tl.load(a_base + 2 * byte_idx[:, :, None] + tl.arange(0, 2)[None, None, :],
                        mask=g_valid[:, None, None], other=0.0).to(tl.float32)                  # [BG, 16, 2]
        x_even, x_odd = tl.split(pairs)                                                          # [BG, 16] each
        low, high = e2m1_pairs(packed, tl.broadcast_to(scale[:, :, None], (W_ROWS, BLOCK_G, 16)), ASM)
        acc += low.to(tl.float32) * x_even[None, :, :] + high.to(tl.float32) * x_odd[None, :, :]
    return tl.sum(tl.sum(acc, axis=2), axis=1)                                                   # [WR]


@triton.jit
def _gemv_gate_up_kernel(
    x_ptr, ids_ptr, w_ptr, s_ptr, bias_ptr, act_ptr,
    N_W, G: tl.constexpr, stride_x, stride_we, stride_wn, stride_se, stride_sn, stride_be, stride_act,
    TOP_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, ASM: tl.constexpr,
):
    pair = tl.program_id(0)
    pid_n = tl.program_id(1)
    W_ROWS: tl.constexpr = 2 * BLOCK_N
    expert = tl.load(ids_ptr + pair).to(tl.int64)
    token = (pair // TOP_K).to(tl.int64)
    offs_wn = pid_n * W_ROWS + tl.arange(0, W_ROWS)                             # interleaved gate/up rows
    n_valid = offs_wn < N_W
    rows = tl.where(n_valid, offs_wn, 0).to(tl.int64)
    w_base = w_ptr + expert * stride_we + rows[:, None] * stride_wn              # [WR, 1]
    s_base = s_ptr + expert * stride_se + rows[:, None] * stride_sn
    result = _row_dot(x_ptr + token * stride_x, w_base, s_base, n_valid, G, BLOCK_G, W_ROWS, ASM)
    result += tl.load(bias_ptr + expert * stride_be + rows, mask=n_valid, other=0.0).to(tl.float32)
    gate, up = tl.split(result.reshape(BLOCK_N, 2))                              # [BN] each
    gate = tl.minimum(gate, SWIGLU_LIMIT_G)
    up = tl.minimum(tl.maximum(up, -SWIGLU_LIMIT_G), SWIGLU_LIMIT_G)
    act = (up + 1.0) * gate * tl.sigmoid(SWIGLU_ALPHA_G * gate)
    offs_on = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    tl.store(act_ptr + pair.to(tl.int64) * stride_act + offs_on, act.to(act_ptr.dtype.element_ty),
             mask=offs_on < N_W // 2)


@triton.jit
def _gemv_down_kernel(
    act_ptr, ids_ptr, route_w_ptr, w_ptr, s_ptr, bias_ptr, out_ptr,
    N, G: tl.constexpr, stride_act, stride_we, stride_wn, stride_se, stride_sn, stride_be, stride_out,
    BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, ASM: tl.constexpr,
):
    pair = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_valid = offs_n < N
    rows = tl.where(n_valid, offs_n, 0).to(tl.int64)
    expert = tl.load(ids_ptr + pair).to(tl.int64)
    w_base = w_ptr + expert * stride_we + rows[:, None] * stride_wn
    s_base = s_ptr + expert * stride_se + rows[:, None] * stride_sn
    y = _row_dot(act_ptr + pair * stride_act, w_base, s_base, n_valid, G, BLOCK_G, BLOCK_N, ASM)
    y += tl.load(bias_ptr + expert * stride_be + rows, mask=n_valid, other=0.0).to(tl.float32)
    y = y * tl.load(route_w_ptr + pair)
    tl.store(out_ptr + pair * stride_out + offs_n, y.to(out_ptr.dtype.element_ty), mask=n_valid)


def mxfp4_moe_gemv(
    hidden: torch.Tensor,            # [T, D] bf16
    topk_ids: torch.Tensor,          # [T, k] int
    topk_weights: torch.Tensor,      # [T, k] float
    gate_up_blocks: torch.Tensor,    # [E, 2I, D/32, 16] uint8
    gate_up_scales: torch.Tensor,    # [E, 2I, D/32] uint8
    gate_up_bias: torch.Tensor,      # [E, 2I]
    down_blocks: torch.Tensor,       # [E, D, I/32, 16] uint8
    down_scales: torch.Tensor,       # [E, D, I/32] uint8
    down_bias: torch.Tensor,         # [E, D]
    *,
    block_n_gate_up: int = 16,
    block_n_down: int = 16,
    block_g: int = 8,
    num_warps: int = 4,
    asm: bool = True,
) -> torch.Tensor:
    """Experts for a few tokens (decode) -> per-pair results [T, k, D] (routing weight applied)."""
    top_k = topk_ids.shape[1]
    num_experts, rows_gu, groups_gu, _ = gate_up_blocks.shape
    hidden_size, groups_dn = down_blocks.shape[1], down_blocks.shape[2]
    asm = asm and use_asm(hidden)
    pair_expert = topk_ids.reshape(-1).to(torch.int32)                                         # [P]
    num_pairs = pair_expert.numel()
    w_gu = gate_up_blocks.view(num_experts, rows_gu, groups_gu * 16)
    w_dn = down_blocks.view(num_experts, hidden_size, groups_dn * 16)

    def project(a: torch.Tensor, out: torch.Tensor, route_w: torch.Tensor | None) -> None:
        if route_w is None:
            _gemv_gate_up_kernel[(num_pairs, triton.cdiv(out.shape[1], block_n_gate_up))](
                a, pair_expert, w_gu, gate_up_scales, gate_up_bias, out,
                rows_gu, groups_gu, a.stride(0), w_gu.stride(0), w_gu.stride(1),
                gate_up_scales.stride(0), gate_up_scales.stride(1), gate_up_bias.stride(0), out.stride(0),
                TOP_K=top_k, BLOCK_N=block_n_gate_up, BLOCK_G=block_g, ASM=asm, num_warps=num_warps,
            )
        else:
            _gemv_down_kernel[(num_pairs, triton.cdiv(hidden_size, block_n_down))](
                a, pair_expert, route_w, w_dn, down_scales, down_bias, out,
                hidden_size, groups_dn, a.stride(0), w_dn.stride(0), w_dn.stride(1),
                down_scales.stride(0), down_scales.stride(1), down_bias.stride(0), out.stride(0),
                BLOCK_N=block_n_down, BLOCK_G=block_g, ASM=asm, num_warps=num_warps,
            )

    return expert_projections(hidden, topk_ids, topk_weights, rows_gu // 2, project)
