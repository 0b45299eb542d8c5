"""One expert's MXFP4 weight tile against a block of activation rows: the inner loop of the MoE kernels.

`expert_tile` accumulates, over the whole reduction dimension K, the product of up to BLOCK_M
activation rows (bf16) with W_ROWS rows of one expert's MXFP4 weight matrix:

- acc [BLOCK_M, W_ROWS] = A @ W^T, the default;
- SWAP_AB: acc [W_ROWS, BLOCK_M] = W @ A^T, the dequantized weights as the left operand (Hopper's
  wgmma reads it from registers). On the H200 it is no faster; it stays an option for other
  cards.

With at most 32 rows (decode tiles) the even and odd k (low and high nibbles) are two dots against
the activations read with stride 2, so the weights are never interleaved in registers; prefill
tiles read the activations contiguously and interleave the dequantized weights back into k order.

Dequantization, chosen by a constexpr:
- DOT_SCALED: Triton's `tl.dot_scaled` with the e2m1 format and E8M0 scales (the compiler upcasts
  the nibbles to bf16 on chips without native MXFP4 MMA).
- otherwise `dequant_bf16`. On the GPU (ASM) a few PTX instructions per 32-bit word turn 8 codes into
  bf16 pairs: byte permutes spread the bytes into 16-bit lanes, shifts and one lop3 place each code's
  magnitude bits in the exponent/mantissa field (its value times 2^-126) and its sign at bit 15, and
  two bf16x2 multiplies apply 2^126 and the E8M0 scale, all exact. Elsewhere (the Triton interpreter)
  integer bit work builds the same bf16 values with the scale folded into the exponent field. Both are
  exact for scale bytes in [2, 252]; `scale_byte_range` lets the model refuse larger ones once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.expert_layout import col_offset
from tkr_embed.backends.torch.kernels.pdl import interpreting

# 2^113: the matrix-vector kernels form 2^(s - 127 + 14) as fp32 bits, which overflow above 240 (and
# the bf16 path overflows above 252); below 2, values under 2^-126 lose bits. Trained weights use ~115-125.
EXACT_SCALE_MAX = 240


def expert_projections(
    hidden: torch.Tensor,  # [T, D]
    topk_ids: torch.Tensor,  # [T, k]
    topk_weights: torch.Tensor,  # [T, k]
    intermediate: int,
    project: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], None],
    down_splits: int = 1,
    act_dtype: torch.dtype | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """A MoE layer's two projections through one kernel family -> per-pair results [T, k, D]
    ([T, k * down_splits, D] when the down projection writes down_splits partial rows a pair).

    `project(a, out, route_w)` fills `out`: gate_up with its SwiGLU when `route_w` is None (a is the
    hidden [T, D], out the activations [P, I]), else down times the routing weights (a is [P, I],
    out [P, D]). `act` and the results are in `act_dtype` and `out_dtype` (default hidden's).
    """
    num_tokens, hidden_size = hidden.shape
    top_k = topk_ids.shape[1]
    num_pairs = num_tokens * top_k
    route_w = topk_weights.reshape(-1).to(torch.float32).contiguous()  # [P]
    act = torch.empty(num_pairs, intermediate, dtype=act_dtype or hidden.dtype, device=hidden.device)  # [P, I]
    project(hidden.contiguous(), act, None)
    partials = torch.empty(num_pairs * down_splits, hidden_size, dtype=out_dtype or hidden.dtype, device=hidden.device)
    project(act, partials, route_w)
    return partials.view(num_tokens, top_k * down_splits, hidden_size)


def scale_byte_range(*scales: torch.Tensor) -> tuple[int, int]:
    """The smallest and largest E8M0 scale bytes among `scales` (host syncs; checked once when kernels are
    prepared). (255, 0) when there are none."""
    present = [s for s in scales if s.numel()]
    return (min((int(s.min()) for s in present), default=255), max((int(s.max()) for s in present), default=0))


# $0,$1: bf16 pairs of the low nibbles of bytes 0-1 and 2-3 of $4; $2,$3: of the high nibbles;
# $5: the four bytes' scale bytes. prmt 0x4140 / 0x4342 put bytes (0, 1) / (2, 3) in the low byte of
# each 16-bit lane; 0x7E80 is 2^126 in bf16; a scale byte s shifted left by 7 is 2^(s-127) in bf16.
def _nibble_pairs_ptx(out: str, pair: str, scale: str, magnitude_shift: int, sign_shift: int) -> str:
    """One output register: the nibbles of `pair`'s two lanes moved to bf16 bits (magnitude at bits 6-8,
    times 2^-126; sign at bit 15), then times 2^126 and the scales in `scale`."""
    return (
        f"shl.b32 t, {pair}, {magnitude_shift};\n"
        "and.b32 t, t, 0x01C001C0;\n"
        f"shl.b32 u, {pair}, {sign_shift};\n"
        "lop3.b32 t, u, 0x80008000, t, 0xEA;\n"
        "mul.rn.bf16x2 t, t, two126;\n"
        f"mul.rn.bf16x2 {out}, t, {scale};\n"
    )


_E2M1_TO_BF16_PTX = tl.constexpr(
    "\n{\n"
    ".reg .b32 zero, two126, x01, x23, s01, s23, t, u;\n"
    "mov.b32 zero, 0;\n"
    "mov.b32 two126, 0x7E807E80;\n"
    "prmt.b32 x01, $4, zero, 0x4140;\n"
    "prmt.b32 x23, $4, zero, 0x4342;\n"
    "prmt.b32 s01, $5, zero, 0x4140;\n"
    "prmt.b32 s23, $5, zero, 0x4342;\n"
    "shl.b32 s01, s01, 7;\n"
    "shl.b32 s23, s23, 7;\n"
    + _nibble_pairs_ptx("$0", "x01", "s01", 6, 12)  # low nibbles: bits 0-2 -> 6-8, bit 3 -> 15
    + _nibble_pairs_ptx("$1", "x23", "s23", 6, 12)
    + _nibble_pairs_ptx("$2", "x01", "s01", 2, 8)  # high nibbles: bits 4-6 -> 6-8, bit 7 -> 15
    + _nibble_pairs_ptx("$3", "x23", "s23", 2, 8)
    + "}\n"
)


def use_asm(tensor: torch.Tensor) -> bool:
    """The PTX dequantization runs on CUDA tensors outside the Triton interpreter."""
    return tensor.is_cuda and not interpreting()


@triton.jit
def e2m1_pairs(packed, scales, ASM: tl.constexpr):
    """packed uint8 and scales uint8 of one shape -> (low-nibble values, high-nibble values) in bf16."""
    if ASM:
        low, high = tl.inline_asm_elementwise(
            _E2M1_TO_BF16_PTX,
            "=r,=r,=r,=r,r,r",
            [packed, scales],
            dtype=(tl.bfloat16, tl.bfloat16),
            is_pure=True,
            pack=4,
        )
    else:
        base = (scales.to(tl.int32) - 1) << 7
        low = e2m1_bits(packed & 0x0F, base)
        high = e2m1_bits(packed >> 4, base)
    return low, high


@triton.jit
def e2m1_bits(codes, base):
    """e2m1 codes (int) and (scale - 1) << 7 -> bf16, exact (see dequant_bf16)."""
    codes = codes.to(tl.int32)
    em = codes & 7
    magnitude = tl.where(em >= 2, (em << 6) + base, tl.where(em == 1, base, 0))
    return (magnitude | ((codes & 8) << 12)).to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def dequant_bf16(packed, scales, ROWS: tl.constexpr, BLOCK_K: tl.constexpr, ASM: tl.constexpr):
    """packed [ROWS, BK/2] uint8 (low nibble first), scales [ROWS, BK/32] uint8 -> [ROWS, BK] bf16.

    For a code with magnitude bits em (e2m1 without its sign) and scale byte s, the bf16 bits are
    em >= 2: (em << 6) + ((s - 1) << 7)   (exponent e + s - 1, mantissa bit m)
    em == 1: (s - 1) << 7                 (0.5 * 2^(s-127))
    em == 0: 0
    with the sign moved from bit 3 to bit 15.
    """
    per_byte = tl.broadcast_to(scales[:, :, None], (ROWS, BLOCK_K // 32, 16)).reshape(ROWS, BLOCK_K // 2)
    low, high = e2m1_pairs(packed, per_byte, ASM)
    return tl.join(low, high).reshape(ROWS, BLOCK_K)  # low nibble first


@triton.jit
def expert_tile(
    a_rows,  # [BM] pointers to the activation rows (bf16)
    row_valid,  # [BM] bool
    w_base,  # [WR, 1] pointers to the weight rows (uint8, K/2 bytes each; expert_layout.row_start)
    s_base,  # [WR, 1] pointers to the scale rows (uint8, K/32 each)
    K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    W_ROWS: tl.constexpr,
    SWAP_AB: tl.constexpr,
    DOT_SCALED: tl.constexpr,
    ASM: tl.constexpr,
    TILED: tl.constexpr,  # the experts in 16-row tiles (expert_layout)
):
    if SWAP_AB:
        acc = tl.zeros((W_ROWS, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, W_ROWS), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_kb = k0 // 2 + tl.arange(0, BLOCK_K // 2)
        offs_ks = k0 // 32 + tl.arange(0, BLOCK_K // 32)
        w_ptrs = w_base + col_offset(offs_kb, 32, TILED)[None, :]  # [WR, BK/2]
        s_ptrs = s_base + col_offset(offs_ks, 2, TILED)[None, :]  # [WR, BK/32]
        if K % BLOCK_K == 0:  # no tail: the weight loads need no mask
            packed = tl.load(w_ptrs)
            scales = tl.load(s_ptrs)
            a_mask = row_valid[:, None]
        else:
            packed = tl.load(w_ptrs, mask=(offs_kb < K // 2)[None, :], other=0)
            scales = tl.load(s_ptrs, mask=(offs_ks < K // 32)[None, :], other=127)
            a_mask = row_valid[:, None] & (offs_kb < K // 2)[None, :]
        if DOT_SCALED:
            offs_k = k0 + tl.arange(0, BLOCK_K)
            a = tl.load(a_rows[:, None] + offs_k[None, :], mask=row_valid[:, None] & (offs_k < K)[None, :], other=0.0)
            if SWAP_AB:
                acc = tl.dot_scaled(packed, scales, "e2m1", tl.trans(a), None, "bf16", acc)
            else:
                acc = tl.dot_scaled(a, None, "bf16", tl.trans(packed), scales, "e2m1", acc)
        elif BLOCK_M <= 32:
            # few rows (decode): even k (low nibbles) and odd k (high nibbles) as two dots, so the
            # weights are never interleaved; the few activation rows are read with stride 2
            a_even = tl.load(a_rows[:, None] + 2 * offs_kb[None, :], mask=a_mask, other=0.0)  # [BM, BK/2]
            a_odd = tl.load(a_rows[:, None] + 2 * offs_kb[None, :] + 1, mask=a_mask, other=0.0)
            per_byte = tl.broadcast_to(scales[:, :, None], (W_ROWS, BLOCK_K // 32, 16)).reshape(W_ROWS, BLOCK_K // 2)
            low, high = e2m1_pairs(packed, per_byte, ASM)  # [WR, BK/2]
            if SWAP_AB:
                acc = tl.dot(low, tl.trans(a_even), acc)
                acc = tl.dot(high, tl.trans(a_odd), acc)
            else:
                acc = tl.dot(a_even, tl.trans(low), acc)
                acc = tl.dot(a_odd, tl.trans(high), acc)
        else:
            # many rows (prefill): contiguous activation loads, weights interleaved back into k order
            offs_k = k0 + tl.arange(0, BLOCK_K)
            a = tl.load(a_rows[:, None] + offs_k[None, :], mask=row_valid[:, None] & (offs_k < K)[None, :], other=0.0)
            w = dequant_bf16(packed, scales, W_ROWS, BLOCK_K, ASM)  # [WR, BK]
            if SWAP_AB:
                acc = tl.dot(w, tl.trans(a), acc)
            else:
                acc = tl.dot(a, tl.trans(w), acc)
    return acc


@triton.jit
def expert_epilogue(
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
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    W_ROWS: tl.constexpr,
    SWAP_AB: tl.constexpr,
    FUSE_SWIGLU: tl.constexpr,
    APPLY_ROUTE_WEIGHT: tl.constexpr,
    SWIGLU_LIMIT: tl.constexpr,
    SWIGLU_ALPHA: tl.constexpr,
):
    """bias, then the clamped SwiGLU over interleaved gate/up rows or the routing weight; store out[pair, n]."""
    offs_wn = pid_n * W_ROWS + tl.arange(0, W_ROWS)
    bias = tl.load(bias_ptr + expert * stride_be + offs_wn, mask=offs_wn < N_W, other=0.0).to(tl.float32)
    if SWAP_AB:
        acc = tl.trans(acc)  # [BM, WR]
    acc = acc + bias[None, :]
    if FUSE_SWIGLU:
        gate, up = tl.split(acc.reshape(BLOCK_M, BLOCK_N, 2))  # [BM, BN] each
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
