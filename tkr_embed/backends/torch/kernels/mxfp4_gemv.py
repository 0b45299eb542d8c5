"""Triton MXFP4 matrix-vector kernels for the MoE at decode (a few tokens, each expert read once per pair).

Dequantization is cheap integer work: an e2m1 code becomes the bits of an fp16 number whose value is
the code's value / 2^14 (exact, the fp16 subnormals cover code 1 = 0.5), and the E8M0 scale times
2^14 is applied once per 32-value group, after the group's products are summed.

- `gemv_gate_up`: one program per (pair, tile of output columns): x[token] @ W_gate_up[e]^T + b, then
  the clamped SwiGLU -> act [P, I].
- `gemv_down_sum`: one program per (token, tile of columns) loops over the token's k experts:
  sum_k w_k * (act[pair] @ W_down[e_k]^T + b) (+ residual) -> [T, D]; no per-pair buffer, no atomics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.mxfp4_reference import SWIGLU_ALPHA, SWIGLU_LIMIT

SWIGLU_LIMIT_G = tl.constexpr(SWIGLU_LIMIT)
SWIGLU_ALPHA_G = tl.constexpr(SWIGLU_ALPHA)
FP16_CODE_SCALE = tl.constexpr(16384.0)   # an e2m1 code read as fp16 bits is value / 2^14


@triton.jit
def _codes_to_f32(low_bits, high_bits):
    """uint16 nibbles placed at bits 0..3 (low) or 4..7 (high) -> e2m1 value / 2^14 in fp32."""
    low = ((low_bits & 0x8) << 12) | ((low_bits & 0x7) << 9)
    high = ((high_bits & 0x80) << 8) | ((high_bits & 0x70) << 5)
    return (low.to(tl.float16, bitcast=True).to(tl.float32),
            high.to(tl.float16, bitcast=True).to(tl.float32))


@triton.jit
def _row_dot(a_base, w_base, s_base, row_valid, G: tl.constexpr, BLOCK_G: tl.constexpr, W_ROWS: tl.constexpr):
    """sum over K of a[k] * W[row, k] for W_ROWS rows; a_base -> [K] bf16, w_base [WR, 1] -> row bytes.

    Returns [W_ROWS] fp32 (scales applied).
    """
    acc = tl.zeros((W_ROWS, BLOCK_G), dtype=tl.float32)
    offs_b = tl.arange(0, 16)
    for g0 in range(0, G, BLOCK_G):
        offs_g = g0 + tl.arange(0, BLOCK_G)                                   # [BG]
        g_valid = offs_g < G
        byte_idx = offs_g[:, None] * 16 + offs_b[None, :]                     # [BG, 16]
        mask = row_valid[:, None, None] & g_valid[None, :, None]
        packed = tl.load(w_base[:, :, None] + byte_idx[None, :, :], mask=mask, other=0)   # [WR, BG, 16] u8
        scale_bits = tl.load(s_base + offs_g[None, :], mask=row_valid[:, None] & g_valid[None, :], other=0)
        scale = (scale_bits.to(tl.int32) << 23).to(tl.float32, bitcast=True) * FP16_CODE_SCALE     # [WR, BG]
        x_even = tl.load(a_base + 2 * byte_idx, mask=g_valid[:, None], other=0.0).to(tl.float32)      # [BG, 16]
        x_odd = tl.load(a_base + 2 * byte_idx + 1, mask=g_valid[:, None], other=0.0).to(tl.float32)
        bits = packed.to(tl.uint16)
        low, high = _codes_to_f32(bits, bits)
        part = tl.sum(low * x_even[None, :, :] + high * x_odd[None, :, :], axis=2)                 # [WR, BG]
        acc += part * scale
    return tl.sum(acc, axis=1)                                                                      # [WR]


@triton.jit
def _gemv_gate_up_kernel(
    x_ptr, ids_ptr, w_ptr, s_ptr, bias_ptr, act_ptr,
    N_W, G: tl.constexpr, stride_x, stride_we, stride_wn, stride_se, stride_sn, stride_be, stride_act,
    TOP_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr,
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
    result = _row_dot(x_ptr + token * stride_x, w_base, s_base, n_valid, G, BLOCK_G, W_ROWS)
    result += tl.load(bias_ptr + expert * stride_be + rows, mask=n_valid, other=0.0).to(tl.float32)
    gate, up = tl.split(result.reshape(BLOCK_N, 2))                              # [BN] each
    gate = tl.minimum(gate, SWIGLU_LIMIT_G)
    up = tl.minimum(tl.maximum(up, -SWIGLU_LIMIT_G), SWIGLU_LIMIT_G)
    act = (up + 1.0) * gate * tl.sigmoid(SWIGLU_ALPHA_G * gate)
    offs_on = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    tl.store(act_ptr + pair.to(tl.int64) * stride_act + offs_on, act.to(act_ptr.dtype.element_ty),
             mask=offs_on < N_W // 2)


@triton.jit
def _gemv_down_sum_kernel(
    act_ptr, ids_ptr, route_w_ptr, w_ptr, s_ptr, bias_ptr, residual_ptr, out_ptr,
    N, G: tl.constexpr, stride_act, stride_we, stride_wn, stride_se, stride_sn, stride_be, stride_res, stride_out,
    TOP_K: tl.constexpr, HAS_RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_valid = offs_n < N
    rows = tl.where(n_valid, offs_n, 0).to(tl.int64)
    total = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for slot in tl.static_range(TOP_K):
        pair = token * TOP_K + slot
        expert = tl.load(ids_ptr + pair).to(tl.int64)
        w_base = w_ptr + expert * stride_we + rows[:, None] * stride_wn
        s_base = s_ptr + expert * stride_se + rows[:, None] * stride_sn
        y = _row_dot(act_ptr + pair * stride_act, w_base, s_base, n_valid, G, BLOCK_G, BLOCK_N)
        y += tl.load(bias_ptr + expert * stride_be + rows, mask=n_valid, other=0.0).to(tl.float32)
        total += y * tl.load(route_w_ptr + pair)
    if HAS_RESIDUAL:
        total += tl.load(residual_ptr + token * stride_res + offs_n, mask=n_valid, other=0.0).to(tl.float32)
    tl.store(out_ptr + token * stride_out + offs_n, total.to(out_ptr.dtype.element_ty), mask=n_valid)


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
    residual: torch.Tensor | None = None,   # [T, D]: added to the result when given
    *,
    block_n_gate_up: int = 16,
    block_n_down: int = 16,
    block_g: int = 8,
    num_warps: int = 4,
) -> torch.Tensor:
    """Experts forward for a few tokens (decode); -> [T, D] in hidden's dtype (plus residual if given)."""
    num_tokens, hidden_size = hidden.shape
    top_k = topk_ids.shape[1]
    num_experts, rows_gu, groups_gu, _ = gate_up_blocks.shape
    intermediate = rows_gu // 2
    groups_dn = down_blocks.shape[2]
    hidden = hidden.contiguous()
    pair_expert = topk_ids.reshape(-1).to(torch.int32)                                         # [P]
    route_w = topk_weights.reshape(-1).to(torch.float32)                                       # [P]
    act = torch.empty(num_tokens * top_k, intermediate, dtype=hidden.dtype, device=hidden.device)   # [P, I]
    w_gu = gate_up_blocks.view(num_experts, rows_gu, groups_gu * 16)
    _gemv_gate_up_kernel[(num_tokens * top_k, triton.cdiv(intermediate, block_n_gate_up))](
        hidden, pair_expert, w_gu, gate_up_scales, gate_up_bias, act,
        rows_gu, groups_gu, hidden.stride(0), w_gu.stride(0), w_gu.stride(1),
        gate_up_scales.stride(0), gate_up_scales.stride(1), gate_up_bias.stride(0), act.stride(0),
        TOP_K=top_k, BLOCK_N=block_n_gate_up, BLOCK_G=block_g, num_warps=num_warps,
    )
    out = torch.empty(num_tokens, hidden_size, dtype=hidden.dtype, device=hidden.device)       # [T, D]
    w_dn = down_blocks.view(num_experts, hidden_size, groups_dn * 16)
    res = residual if residual is not None else out
    _gemv_down_sum_kernel[(num_tokens, triton.cdiv(hidden_size, block_n_down))](
        act, pair_expert, route_w, w_dn, down_scales, down_bias, res, out,
        hidden_size, groups_dn, act.stride(0), w_dn.stride(0), w_dn.stride(1),
        down_scales.stride(0), down_scales.stride(1), down_bias.stride(0), res.stride(0), out.stride(0),
        TOP_K=top_k, HAS_RESIDUAL=residual is not None, BLOCK_N=block_n_down, BLOCK_G=block_g,
        num_warps=num_warps,
    )
    return out
