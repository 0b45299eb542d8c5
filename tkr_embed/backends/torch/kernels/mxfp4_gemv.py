"""Triton MXFP4 matrix-vector kernels for the MoE at decode (a few tokens, each expert read once per pair).

The inner loop takes each row 32-bit word by word (8 codes) through one PTX block (`_word_dot`):
- fp16 products (default): the codes are placed in e4m3 bytes (value * 2^-6, exact), widened by the
  hardware to fp16 pairs and multiplied-added with the activations rounded to fp16, four fp16x2
  operations a word, whose sum is widened to fp32;
- fp32 products (f16_products=False): the codes are placed in fp16 (value * 2^-14, exact), widened
  to fp32 and multiplied-added with the fp32 activations.
The E8M0 scale multiplies each 32-code group's fp32 sum once. A program holds several rows of the same
groups (their activations are converted once) and issues the next block's loads before this block's
arithmetic. sm_90 instructions per weight: 3.4-4.8 (fp16), 5.3-6.6 (fp32).

- `gemv_gate_up`: one program per (pair, tile of output columns): x[token] @ W_gate_up[e]^T + b, then
  the clamped SwiGLU -> act [P, I].
- `gemv_down`: one program per (pair, tile of columns): w_pair * (act[pair] @ W_down[e]^T + b) ->
  partials [P, D]; the k partials of a token are summed by the RMSNorm that follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.expert_layout import col_offset, row_start
from tkr_embed.backends.torch.kernels.moe_weights import MoeWeights
from tkr_embed.backends.torch.kernels.mxfp4_reference import SWIGLU_ALPHA, SWIGLU_LIMIT
from tkr_embed.backends.torch.kernels.mxfp4_tile import e2m1_bits, expert_projections, use_asm
from tkr_embed.backends.torch.kernels.pdl import pdl_launch, wait_for_previous_kernel

SWIGLU_LIMIT_G = tl.constexpr(SWIGLU_LIMIT)
SWIGLU_ALPHA_G = tl.constexpr(SWIGLU_ALPHA)


@dataclass(frozen=True)
class GemvConfig:
    """Tiles of the matrix-vector kernels (the defaults are the fastest of an H200 sweep); block_n counts output
    columns (act's for gate_up: 2x weight rows); block_g groups of 32 codes per loop step."""

    block_n_gate_up: int = 16
    block_n_down: int = 16
    block_g: int = 16  # 16 vs 8: 0.0340 vs 0.0355 ms at one token, 0.093 vs 0.094 at four (H200)
    num_warps: int = 2
    asm: bool = True
    f16_products: bool = True
    down_splits: int = 1  # >1: the down projection split over K into partial rows (summed by the norm)


# The k offsets (within a word's 8) of the asm block's activation inputs $2..$9: the fp16 pairs are
# made from the low nibbles of bytes (0, 1), of bytes (2, 3), then the high nibbles of the same.
WORD_K_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _nibble_f32_ptx(pair: str, magnitude_shift: int, sign_shift: int, x_lo: str, x_hi: str, first: bool) -> str:
    """Two codes of `pair`'s 16-bit lanes -> fp16 bits (magnitude at bits 9-11: value * 2^-14; sign at
    15) -> fp32, multiplied with x_lo / x_hi and added to acc."""
    head = "mul.rn.f32 acc, f, " + x_lo if first else "fma.rn.f32 acc, f, " + x_lo + ", acc"
    return (
        f"shl.b32 t, {pair}, {magnitude_shift};\n"
        "and.b32 t, t, 0x0E000E00;\n"
        f"shl.b32 u, {pair}, {sign_shift};\n"
        "lop3.b32 t, u, 0x80008000, t, 0xEA;\n"
        "mov.b32 {lo, hi}, t;\n"
        "cvt.f32.f16 f, lo;\n"
        f"{head};\n"
        "cvt.f32.f16 f, hi;\n"
        f"fma.rn.f32 acc, f, {x_hi}, acc;\n"
    )


# $0 = sum over the word's 8 codes of value * 2^-14 * x; $1 the word; $2..$9 the fp32 activations in
# WORD_K_ORDER. prmt 0x4140 / 0x4342 put bytes (0, 1) / (2, 3) in the low byte of each 16-bit lane.
_WORD_DOT_PTX = tl.constexpr(
    "\n{\n"
    ".reg .b32 zero, x01, x23, t, u;\n"
    ".reg .b16 lo, hi;\n"
    ".reg .f32 f, acc;\n"
    "mov.b32 zero, 0;\n"
    "prmt.b32 x01, $1, zero, 0x4140;\n"
    "prmt.b32 x23, $1, zero, 0x4342;\n"
    + _nibble_f32_ptx("x01", 9, 12, "$2", "$3", True)  # low nibbles: bits 0-2 -> 9-11, bit 3 -> 15
    + _nibble_f32_ptx("x23", 9, 12, "$4", "$5", False)
    + _nibble_f32_ptx("x01", 5, 8, "$6", "$7", False)  # high nibbles: bits 4-6 -> 9-11, bit 7 -> 15
    + _nibble_f32_ptx("x23", 5, 8, "$8", "$9", False)
    + "mov.f32 $0, acc;\n"
    "}\n"
)


# The same sum with fp16 products: each code's bits are placed in an e4m3 byte (its value times 2^-6,
# exact: magnitude at bits 2-4, sign at 7; low nibbles by shl 2 / shl 4, high nibbles by shr 2 / as
# they are), four bytes per register; the hardware widens e4m3 pairs to fp16 pairs, the activations
# are rounded to fp16 pairs, and four fp16x2 multiply-adds accumulate the word in fp16 before it is
# widened to fp32 (about half the instructions of the fp32 block). $0 = sum of value * 2^-6 * x.
_WORD_DOT_F16_PTX = tl.constexpr(
    "\n{\n"
    ".reg .b32 lo, hi, t, acc, w0, w1, w2, w3, x0, x1, x2, x3;\n"
    ".reg .b16 e0, e1, e2, e3, h0, h1;\n"
    ".reg .f32 f0, f1;\n"
    "shl.b32 t, $1, 2;\n"
    "and.b32 t, t, 0x1C1C1C1C;\n"
    "shl.b32 lo, $1, 4;\n"
    "lop3.b32 lo, lo, 0x80808080, t, 0xEA;\n"  # low nibbles: k offsets 0, 2, 4, 6
    "shr.b32 t, $1, 2;\n"
    "and.b32 t, t, 0x1C1C1C1C;\n"
    "lop3.b32 hi, $1, 0x80808080, t, 0xEA;\n"  # high nibbles: k offsets 1, 3, 5, 7
    "mov.b32 {e0, e1}, lo;\n"
    "mov.b32 {e2, e3}, hi;\n"
    "cvt.rn.f16x2.e4m3x2 w0, e0;\n"
    "cvt.rn.f16x2.e4m3x2 w1, e1;\n"
    "cvt.rn.f16x2.e4m3x2 w2, e2;\n"
    "cvt.rn.f16x2.e4m3x2 w3, e3;\n"
    "cvt.rn.f16x2.f32 x0, $3, $2;\n"  # (a, b) -> (upper, lower) half
    "cvt.rn.f16x2.f32 x1, $5, $4;\n"
    "cvt.rn.f16x2.f32 x2, $7, $6;\n"
    "cvt.rn.f16x2.f32 x3, $9, $8;\n"
    "mul.rn.f16x2 acc, w0, x0;\n"
    "fma.rn.f16x2 acc, w1, x1, acc;\n"
    "fma.rn.f16x2 acc, w2, x2, acc;\n"
    "fma.rn.f16x2 acc, w3, x3, acc;\n"
    "mov.b32 {h0, h1}, acc;\n"
    "cvt.f32.f16 f0, h0;\n"
    "cvt.f32.f16 f1, h1;\n"
    "add.f32 $0, f0, f1;\n"
    "}\n"
)


@triton.jit
def _word_dot(words, x0, x1, x2, x3, x4, x5, x6, x7, ASM: tl.constexpr, F16: tl.constexpr):
    """int32 words of 8 e2m1 codes and their fp32 activations (WORD_K_ORDER) -> sum of code value * 2^-14 * x
    (F16: * 2^-6, products and the word's sum in fp16)."""
    if ASM:
        if F16:
            dot = tl.inline_asm_elementwise(
                _WORD_DOT_F16_PTX,
                "=f,r,f,f,f,f,f,f,f,f",
                [words, x0, x1, x2, x3, x4, x5, x6, x7],
                dtype=tl.float32,
                is_pure=True,
                pack=1,
            )
        else:
            dot = tl.inline_asm_elementwise(
                _WORD_DOT_PTX,
                "=f,r,f,f,f,f,f,f,f,f",
                [words, x0, x1, x2, x3, x4, x5, x6, x7],
                dtype=tl.float32,
                is_pure=True,
                pack=1,
            )
    else:  # the same values by integer bit work: scale byte 113 is 2^-14, 121 is 2^-6
        base = ((121 if F16 else 113) - 1) << 7
        dot = e2m1_bits(words & 0xF, base).to(tl.float32) * x0
        dot += e2m1_bits((words >> 8) & 0xF, base).to(tl.float32) * x1
        dot += e2m1_bits((words >> 16) & 0xF, base).to(tl.float32) * x2
        dot += e2m1_bits((words >> 24) & 0xF, base).to(tl.float32) * x3
        dot += e2m1_bits((words >> 4) & 0xF, base).to(tl.float32) * x4
        dot += e2m1_bits((words >> 12) & 0xF, base).to(tl.float32) * x5
        dot += e2m1_bits((words >> 20) & 0xF, base).to(tl.float32) * x6
        dot += e2m1_bits((words >> 28) & 0xF, base).to(tl.float32) * x7
    return dot


@triton.jit
def _load_group_block(a_base, w_base, s_base, row_valid, g0, g_end, BLOCK_G: tl.constexpr, TILED: tl.constexpr):
    """Groups g0 .. g0 + BLOCK_G of every row: words [WR, BG*4] int32, scale bytes [WR, BG], and the
    activations of each word in WORD_K_ORDER (eight [1, BG*4] fp32). From group g_end on everything is 0."""
    offs_word = g0 * 4 + tl.arange(0, BLOCK_G * 4)  # [BG*4]
    word_valid = offs_word < g_end * 4
    words = tl.load(
        w_base + col_offset(offs_word, 8, TILED)[None, :], mask=row_valid[:, None] & word_valid[None, :], other=0
    )
    offs_g = g0 + tl.arange(0, BLOCK_G)
    scale = tl.load(
        s_base + col_offset(offs_g, 2, TILED)[None, :], mask=row_valid[:, None] & (offs_g < g_end)[None, :], other=0
    )
    k0 = a_base + offs_word * 8
    x0 = tl.load(k0 + 0, mask=word_valid, other=0.0).to(tl.float32)[None, :]
    x1 = tl.load(k0 + 2, mask=word_valid, other=0.0).to(tl.float32)[None, :]
    x2 = tl.load(k0 + 4, mask=word_valid, other=0.0).to(tl.float32)[None, :]
    x3 = tl.load(k0 + 6, mask=word_valid, other=0.0).to(tl.float32)[None, :]
    x4 = tl.load(k0 + 1, mask=word_valid, other=0.0).to(tl.float32)[None, :]
    x5 = tl.load(k0 + 3, mask=word_valid, other=0.0).to(tl.float32)[None, :]
    x6 = tl.load(k0 + 5, mask=word_valid, other=0.0).to(tl.float32)[None, :]
    x7 = tl.load(k0 + 7, mask=word_valid, other=0.0).to(tl.float32)[None, :]
    return words, scale, x0, x1, x2, x3, x4, x5, x6, x7


@triton.jit
def _row_dot_words(
    a_base,
    w_base,
    s_base,
    row_valid,
    g_begin,
    g_end,
    SPAN: tl.constexpr,
    BLOCK_G: tl.constexpr,
    W_ROWS: tl.constexpr,
    ASM: tl.constexpr,
    F16: tl.constexpr,
    TILED: tl.constexpr,
):
    """sum over the k of groups g_begin .. g_end (at most SPAN groups) of a[k] * W[row, k] for W_ROWS rows
    -> [W_ROWS] fp32; a_base -> [K] bf16, w_base [WR, 1] -> each row's first int32 word, s_base [WR, 1]
    -> its scale bytes.

    The words of BLOCK_G groups are one contiguous run per row, so a thread gets whole 16-byte groups
    and the remaining threads spread over rows: a thread holds several rows of the same groups and
    loads their activations once. The next block's loads are issued before this block's arithmetic,
    so their latency overlaps it.
    """
    acc = tl.zeros((W_ROWS, BLOCK_G), dtype=tl.float32)
    words, scale, x0, x1, x2, x3, x4, x5, x6, x7 = _load_group_block(
        a_base, w_base, s_base, row_valid, g_begin, g_end, BLOCK_G, TILED
    )
    for offset in range(0, SPAN, BLOCK_G):
        n_words, n_scale, n0, n1, n2, n3, n4, n5, n6, n7 = _load_group_block(
            a_base, w_base, s_base, row_valid, g_begin + offset + BLOCK_G, g_end, BLOCK_G, TILED
        )
        dots = _word_dot(words, x0, x1, x2, x3, x4, x5, x6, x7, ASM, F16)  # [WR, BG*4]
        # 2^(s - 127) * 2^14 (F16: 2^6) as fp32 bits: (s + 14) << 23 (scale bytes above 240 are refused at load)
        factor = ((scale.to(tl.int32) + (6 if F16 else 14)) << 23).to(tl.float32, bitcast=True)
        acc += tl.sum(dots.reshape(W_ROWS, BLOCK_G, 4), axis=2) * factor
        words, scale, x0, x1, x2, x3, x4, x5, x6, x7 = n_words, n_scale, n0, n1, n2, n3, n4, n5, n6, n7
    return tl.sum(acc, axis=1)  # [WR]


@triton.jit
def _gemv_gate_up_kernel(
    x_ptr,
    ids_ptr,
    w_ptr,
    s_ptr,
    bias_ptr,
    act_ptr,
    N_W,
    G: tl.constexpr,
    stride_x,
    stride_we,
    stride_wn,
    stride_se,
    stride_sn,
    stride_be,
    stride_act,
    TOP_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_G: tl.constexpr,
    ASM: tl.constexpr,
    F16: tl.constexpr,
    TILED: tl.constexpr,
    PDL: tl.constexpr,
):
    wait_for_previous_kernel(PDL)
    pair = tl.program_id(0)
    pid_n = tl.program_id(1)
    W_ROWS: tl.constexpr = 2 * BLOCK_N
    expert = tl.load(ids_ptr + pair).to(tl.int64)
    token = (pair // TOP_K).to(tl.int64)
    offs_wn = pid_n * W_ROWS + tl.arange(0, W_ROWS)  # interleaved gate/up rows
    n_valid = offs_wn < N_W
    rows = tl.where(n_valid, offs_wn, 0).to(tl.int64)
    w_base = w_ptr + expert * stride_we + row_start(rows, stride_wn, 8, TILED)[:, None]  # [WR, 1]
    s_base = s_ptr + expert * stride_se + row_start(rows, stride_sn, 2, TILED)[:, None]
    result = _row_dot_words(
        x_ptr + token * stride_x, w_base, s_base, n_valid, 0, G, G, BLOCK_G, W_ROWS, ASM, F16, TILED
    )
    result += tl.load(bias_ptr + expert * stride_be + rows, mask=n_valid, other=0.0).to(tl.float32)
    gate, up = tl.split(result.reshape(BLOCK_N, 2))  # [BN] each
    gate = tl.minimum(gate, SWIGLU_LIMIT_G)
    up = tl.minimum(tl.maximum(up, -SWIGLU_LIMIT_G), SWIGLU_LIMIT_G)
    act = (up + 1.0) * gate * tl.sigmoid(SWIGLU_ALPHA_G * gate)
    offs_on = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    tl.store(
        act_ptr + pair.to(tl.int64) * stride_act + offs_on, act.to(act_ptr.dtype.element_ty), mask=offs_on < N_W // 2
    )


@triton.jit
def _gemv_down_kernel(
    act_ptr,
    ids_ptr,
    route_w_ptr,
    w_ptr,
    s_ptr,
    bias_ptr,
    out_ptr,
    N,
    G: tl.constexpr,
    stride_act,
    stride_we,
    stride_wn,
    stride_se,
    stride_sn,
    stride_be,
    stride_out,
    BLOCK_N: tl.constexpr,
    BLOCK_G: tl.constexpr,
    ASM: tl.constexpr,
    F16: tl.constexpr,
    SPLITS: tl.constexpr,
    TILED: tl.constexpr,
    PDL: tl.constexpr,
):
    """SPLITS > 1: program (pair, n, s) takes the s-th share of the groups and writes its own row of
    partials (pair * SPLITS + s); the bias goes into share 0; the RMSNorm after sums them all."""
    wait_for_previous_kernel(PDL)
    pair = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_valid = offs_n < N
    rows = tl.where(n_valid, offs_n, 0).to(tl.int64)
    expert = tl.load(ids_ptr + pair).to(tl.int64)
    w_base = w_ptr + expert * stride_we + row_start(rows, stride_wn, 8, TILED)[:, None]
    s_base = s_ptr + expert * stride_se + row_start(rows, stride_sn, 2, TILED)[:, None]
    bias_ptrs = bias_ptr + expert * stride_be + rows
    if SPLITS == 1:
        y = _row_dot_words(
            act_ptr + pair * stride_act, w_base, s_base, n_valid, 0, G, G, BLOCK_G, BLOCK_N, ASM, F16, TILED
        )
        y += tl.load(bias_ptrs, mask=n_valid, other=0.0).to(tl.float32)
        out_row = pair
    else:
        share: tl.constexpr = (G + SPLITS - 1) // SPLITS
        pid_s = tl.program_id(2)
        g_begin = pid_s * share
        g_end = g_begin + share
        g_end = tl.where(g_end < G, g_end, G)
        y = _row_dot_words(
            act_ptr + pair * stride_act,
            w_base,
            s_base,
            n_valid,
            g_begin,
            g_end,
            share,
            BLOCK_G,
            BLOCK_N,
            ASM,
            F16,
            TILED,
        )
        y += tl.load(bias_ptrs, mask=n_valid & (pid_s == 0), other=0.0).to(tl.float32)
        out_row = pair * SPLITS + pid_s
    y = y * tl.load(route_w_ptr + pair)
    tl.store(out_ptr + out_row * stride_out + offs_n, y.to(out_ptr.dtype.element_ty), mask=n_valid)


def mxfp4_moe_gemv(
    hidden: torch.Tensor,  # [T, D] bf16
    topk_ids: torch.Tensor,  # [T, k] int
    topk_weights: torch.Tensor,  # [T, k] float
    weights: MoeWeights,  # the layer's experts
    config: GemvConfig | None = None,
    tiled: bool = False,  # the blocks and scales in 16-row tiles (expert_layout)
) -> torch.Tensor:
    """Experts for a few tokens (decode) -> per-pair results [T, k * down_splits, D] (routing weight applied;
    with cfg.down_splits > 1 each pair's down projection is split over K into that many partial rows)."""
    cfg = config or GemvConfig()
    top_k = topk_ids.shape[1]
    gate_up_blocks, gate_up_scales, gate_up_bias, down_blocks, down_scales, down_bias = weights
    num_experts, rows_gu, groups_gu, _ = gate_up_blocks.shape
    hidden_size, groups_dn = down_blocks.shape[1], down_blocks.shape[2]
    asm = cfg.asm and use_asm(hidden)
    pair_expert = topk_ids.reshape(-1).to(torch.int32)  # [P]
    num_pairs = pair_expert.numel()
    # rows as int32 words (each row is a whole number of 16-byte groups)
    w_gu = gate_up_blocks.view(num_experts, rows_gu, groups_gu * 16).view(torch.int32)
    w_dn = down_blocks.view(num_experts, hidden_size, groups_dn * 16).view(torch.int32)

    def project(a: torch.Tensor, out: torch.Tensor, route_w: torch.Tensor | None) -> None:
        if route_w is None:
            _gemv_gate_up_kernel[(num_pairs, triton.cdiv(out.shape[1], cfg.block_n_gate_up))](
                a,
                pair_expert,
                w_gu,
                gate_up_scales,
                gate_up_bias,
                out,
                rows_gu,
                groups_gu,
                a.stride(0),
                w_gu.stride(0),
                w_gu.stride(1),
                gate_up_scales.stride(0),
                gate_up_scales.stride(1),
                gate_up_bias.stride(0),
                out.stride(0),
                TOP_K=top_k,
                BLOCK_N=cfg.block_n_gate_up,
                BLOCK_G=cfg.block_g,
                ASM=asm,
                F16=cfg.f16_products,
                TILED=tiled,
                num_warps=cfg.num_warps,
                **pdl_launch(a),
            )
        else:
            _gemv_down_kernel[(num_pairs, triton.cdiv(hidden_size, cfg.block_n_down), cfg.down_splits)](
                a,
                pair_expert,
                route_w,
                w_dn,
                down_scales,
                down_bias,
                out,
                hidden_size,
                groups_dn,
                a.stride(0),
                w_dn.stride(0),
                w_dn.stride(1),
                down_scales.stride(0),
                down_scales.stride(1),
                down_bias.stride(0),
                out.stride(0),
                BLOCK_N=cfg.block_n_down,
                BLOCK_G=cfg.block_g,
                ASM=asm,
                F16=cfg.f16_products,
                SPLITS=cfg.down_splits,
                TILED=tiled,
                num_warps=cfg.num_warps,
                **pdl_launch(a),
            )

    return expert_projections(hidden, topk_ids, topk_weights, rows_gu // 2, project, down_splits=cfg.down_splits)
