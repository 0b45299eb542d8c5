"""One expert's MXFP4 weight tile against a block of activation rows: the inner loop of the MoE kernels.

`expert_tile` accumulates, over the whole reduction dimension K, the product of up to BLOCK_M
activation rows (bf16) with W_ROWS rows of one expert's MXFP4 weight matrix:

- SWAP_AB: acc [W_ROWS, BLOCK_M] = W @ A^T. The dequantized weights are the left operand, which
  Hopper's wgmma can read from registers; the few activation rows go through shared memory. This
  is the decode orientation (BLOCK_M of 16-32 rows, W_ROWS >= 64).
- otherwise acc [BLOCK_M, W_ROWS] = A @ W^T (prefill: many rows per expert).

Dequantization, chosen by a constexpr:
- DOT_SCALED: Triton's `tl.dot_scaled` with the e2m1 format and E8M0 scales (the compiler upcasts
  the nibbles to bf16 on chips without native MXFP4 MMA).
- otherwise `dequant_bf16`: integer bit work builds each bf16 value with its scale folded into the
  exponent field, exact for scale bytes in [2, 252] (checked when the weights are prepared;
  see `scales_in_exact_range`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

EXACT_SCALE_MIN = 2
EXACT_SCALE_MAX = 252


def scales_in_exact_range(*scales: torch.Tensor) -> bool:
    """True when every E8M0 scale byte lets `dequant_bf16` build exact bf16 values (no sub/overflow)."""
    return all(int(s.min()) >= EXACT_SCALE_MIN and int(s.max()) <= EXACT_SCALE_MAX for s in scales if s.numel())


@triton.jit
def dequant_bf16(packed, scales, ROWS: tl.constexpr, BLOCK_K: tl.constexpr):
    """packed [ROWS, BK/2] uint8 (low nibble first), scales [ROWS, BK/32] uint8 -> [ROWS, BK] bf16.

    For a code with magnitude bits em (e2m1 without its sign) and scale byte s, the bf16 bits are
    em >= 2: (em << 6) + ((s - 1) << 7)   (exponent e + s - 1, mantissa bit m)
    em == 1: (s - 1) << 7                 (0.5 * 2^(s-127))
    em == 0: 0
    with the sign moved from bit 3 to bit 15.
    """
    codes = tl.join(packed & 0x0F, packed >> 4).reshape(ROWS, BLOCK_K).to(tl.int32)     # low nibble first
    base = (scales.to(tl.int32) - 1) << 7                                                 # [ROWS, BK/32]
    base = tl.broadcast_to(base[:, :, None], (ROWS, BLOCK_K // 32, 32)).reshape(ROWS, BLOCK_K)
    em = codes & 7
    magnitude = tl.where(em >= 2, (em << 6) + base, tl.where(em == 1, base, 0))
    bits = magnitude | ((codes & 8) << 12)
    return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def expert_tile(
    a_rows,              # [BM] pointers to the activation rows (bf16)
    row_valid,           # [BM] bool
    w_base,              # [WR, 1] pointers to the weight rows (uint8, K/2 bytes each)
    s_base,              # [WR, 1] pointers to the scale rows (uint8, K/32 each)
    K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    W_ROWS: tl.constexpr,
    SWAP_AB: tl.constexpr,
    DOT_SCALED: tl.constexpr,
):
    if SWAP_AB:
        acc = tl.zeros((W_ROWS, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, W_ROWS), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(a_rows[:, None] + offs_k[None, :], mask=row_valid[:, None] & (offs_k < K)[None, :], other=0.0)
        offs_kb = k0 // 2 + tl.arange(0, BLOCK_K // 2)
        packed = tl.load(w_base + offs_kb[None, :], mask=(offs_kb < K // 2)[None, :], other=0)       # [WR, BK/2]
        offs_ks = k0 // 32 + tl.arange(0, BLOCK_K // 32)
        scales = tl.load(s_base + offs_ks[None, :], mask=(offs_ks < K // 32)[None, :], other=127)   # [WR, BK/32]
        if SWAP_AB:
            if DOT_SCALED:
                acc = tl.dot_scaled(packed, scales, "e2m1", tl.trans(a), None, "bf16", acc)
            else:
                acc = tl.dot(dequant_bf16(packed, scales, W_ROWS, BLOCK_K), tl.trans(a), acc)
        else:
            if DOT_SCALED:
                acc = tl.dot_scaled(a, None, "bf16", tl.trans(packed), scales, "e2m1", acc)
            else:
                acc = tl.dot(a, tl.trans(dequant_bf16(packed, scales, W_ROWS, BLOCK_K)), acc)
    return acc


@triton.jit
def expert_epilogue(
    acc, expert, pair, row_valid, pid_n, bias_ptr, route_w_ptr, out_ptr, N_W, N_OUT, stride_be, stride_out,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, W_ROWS: tl.constexpr, SWAP_AB: tl.constexpr,
    FUSE_SWIGLU: tl.constexpr, APPLY_ROUTE_WEIGHT: tl.constexpr, SWIGLU_LIMIT: tl.constexpr,
    SWIGLU_ALPHA: tl.constexpr,
):
    """bias, then the clamped SwiGLU over interleaved gate/up rows or the routing weight; store out[pair, n]."""
    offs_wn = pid_n * W_ROWS + tl.arange(0, W_ROWS)
    bias = tl.load(bias_ptr + expert * stride_be + offs_wn, mask=offs_wn < N_W, other=0.0).to(tl.float32)
    if SWAP_AB:
        acc = tl.trans(acc)                                                  # [BM, WR]
    acc = acc + bias[None, :]
    if FUSE_SWIGLU:
        gate, up = tl.split(acc.reshape(BLOCK_M, BLOCK_N, 2))               # [BM, BN] each
        gate = tl.minimum(gate, SWIGLU_LIMIT)
        up = tl.minimum(tl.maximum(up, -SWIGLU_LIMIT), SWIGLU_LIMIT)
        result = (up + 1.0) * gate * tl.sigmoid(SWIGLU_ALPHA * gate)
    else:
        result = acc
    safe_pair = tl.where(row_valid, pair, 0)
    if APPLY_ROUTE_WEIGHT:
        result = result * tl.load(route_w_ptr + safe_pair, mask=row_valid, other=0.0)[:, None]
    offs_on = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    out_ptrs = out_ptr + safe_pair.to(tl.int64)[:, None] * stride_out + offs_on[None, :]
    tl.store(out_ptrs, result.to(out_ptr.dtype.element_ty), mask=row_valid[:, None] & (offs_on < N_OUT)[None, :])
