"""MXFP4 MoE for decode batches of many sequences: weights dequantized straight into tensor-core registers.

At 64 sequences a step routes ~256 (token, expert) pairs, ~8 per expert, so every expert's weights are
read once per layer for a handful of tokens: the layer is a stream of 4-bit weights, and what limits
it is how few instructions turn each weight into an MMA operand. Here each weight tile is the left
operand of an `mma.sync.m16n8k16` (swap AB: weight rows are M, the expert's tokens are N) and every
thread loads exactly the bytes its A fragments need, so nothing goes through shared memory:

- Each 64-code chunk of a row is 32 bytes; thread t of a quad loads bytes 8t..8t+7 of rows g and g+8
  (one 8-byte load each, a quad reads the row's 32 bytes). Byte b of a word holds codes 2b, 2b+1, which
  become a fragment pair (k, k+1) of one of four k16 tiles. Any K order works because the activations
  are read in the same order: thread t's B fragments are 16 contiguous values (two 16-byte loads), no
  shuffle.
- A few PTX instructions per 32-bit word place each code in an e4m3 byte (its value times 2^-6,
  exact), the hardware widens e4m3 pairs to fp16 pairs and one fp16x2 multiply each applies the
  group's scale (17 instructions for 8 weights). The weights enter the MMAs already scaled, exact for
  the scale bytes in SCALE_BYTE_RANGE (the model checks once; other weights take the older kernels).
- Activations are fp16 operands: the hidden states are converted once per layer and the down
  projection's input is written in fp16 by the gate_up epilogue. The SwiGLU output is within +-56;
  the model checks once that RMSNorm outputs stay inside fp16 (`normed_inputs_fit`).

The layouts are written out as linear layouts (Gluon) and every change of layout between the load
and the MMA is asserted to move no data. Pairs are grouped by expert into blocks of BLOCK_T tokens
(`moe_align`); program (block, row tile) computes ROWS weight rows for the block's tokens over the
whole K, loading the next three chunks' weights and the next chunk's activations while it multiplies.
H100, one layer at 64 tokens: 0.374 -> 0.263 ms; with the experts in 16-row tiles (`expert_layout`: a
warp's load then reads two whole cache lines instead of 32 bytes of eight rows) 0.206 ms.

1. gate_up: x[token] @ W_gate_up[e]^T + b, clamped SwiGLU -> act [P, I] (fp16)
2. down: act @ W_down[e]^T + b, times the routing weight -> partials [P, D]
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import mma_v2

from tkr_embed.backends.torch.kernels.moe_align import align_pairs_to_experts
from tkr_embed.backends.torch.kernels.moe_weights import MoeWeights
from tkr_embed.backends.torch.kernels.mxfp4_reference import SWIGLU_ALPHA, SWIGLU_LIMIT
from tkr_embed.backends.torch.kernels.mxfp4_tile import expert_projections
from tkr_embed.backends.torch.kernels.pdl import use_pdl

CHUNKS_PER_STEP = 3  # 64-code chunks a loop step multiplies while the next ones load (K % 192 == 0)
# The weights enter the MMAs already scaled, in fp16: code * 2^(s - 127 + SCALE_BIAS), and the sum is
# multiplied by 2^-SCALE_BIAS. That is exact while the multiplier 2^(s - 121 + SCALE_BIAS) is a normal fp16
# (scale bytes 105..134) and 6 * 2^(s - 125) stays below fp16's 65504; below 112 the smallest codes become
# fp16 subnormals (still exact down to 2^-24). Trained gpt-oss scales lie around 115-125.
SCALE_BIAS = 2
SCALE_BYTE_RANGE = (105, 134)
SCALE_BIAS_G = gl.constexpr(SCALE_BIAS)
UNBIAS_G = gl.constexpr(2.0**-SCALE_BIAS)


@dataclass(frozen=True)
class MmaTileConfig:
    block_t: int = 16  # tokens per block (N of the MMAs): 8, 16 or 32
    rows_gate_up: int = 128  # weight rows per program (interleaved gate/up rows)
    rows_down: int = 64
    num_warps: int = 4


def default_mma_config(num_pairs: int, num_experts: int) -> MmaTileConfig:
    """Blocks of 8 tokens when experts average at most two pairs (120b's 128 experts at 64 tokens), else 16."""
    return MmaTileConfig(block_t=8 if num_pairs <= 2 * num_experts else 16)


# $4: one 32-bit word of a row (codes 2b, 2b+1 in byte b); $8: the scale multiplier as an fp16 pair.
# Low nibbles go to e4m3 bytes by shl 2 (magnitude to bits 2-4) and shl 4 (sign to bit 7), high nibbles
# by shr 2 and as they are; byte permutes pair each byte's two codes, cvt widens e4m3 pairs to fp16 pairs
# (value * 2^-6, exact) and one fp16x2 multiply each applies the scale: $0,$1 = codes 0-3, $2,$3 = codes 4-7.
_WORD_TO_F16_PTX = (
    "\n{\n"
    ".reg .b32 t, lo, hi, p, q, f0, f1, f2, f3;\n"
    ".reg .b16 p0, p1, q0, q1;\n"
    "shl.b32 t, $4, 2;\n"
    "and.b32 t, t, 0x1C1C1C1C;\n"
    "shl.b32 lo, $4, 4;\n"
    "lop3.b32 lo, lo, 0x80808080, t, 0xEA;\n"
    "shr.b32 t, $4, 2;\n"
    "and.b32 t, t, 0x1C1C1C1C;\n"
    "lop3.b32 hi, $4, 0x80808080, t, 0xEA;\n"
    "prmt.b32 p, lo, hi, 0x5140;\n"
    "prmt.b32 q, lo, hi, 0x7362;\n"
    "mov.b32 {p0, p1}, p;\n"
    "mov.b32 {q0, q1}, q;\n"
    "cvt.rn.f16x2.e4m3x2 f0, p0;\n"
    "cvt.rn.f16x2.e4m3x2 f1, p1;\n"
    "cvt.rn.f16x2.e4m3x2 f2, q0;\n"
    "cvt.rn.f16x2.e4m3x2 f3, q1;\n"
    "mul.rn.f16x2 $0, f0, $8;\n"
    "mul.rn.f16x2 $1, f1, $8;\n"
    "mul.rn.f16x2 $2, f2, $8;\n"
    "mul.rn.f16x2 $3, f3, $8;\n"
    "}\n"
)


@dataclass(frozen=True)
class _Layouts:
    mma: gl.NVMMADistributedLayout
    a_op: gl.DotOperandLayout
    b_op: gl.DotOperandLayout
    w_load: gl.DistributedLinearLayout  # [ROWS, 4 (t), 2 (word), 4 (byte)]; loads take [ROWS, 4, 2] int32
    x_load: gl.DistributedLinearLayout  # [BT, 4 (t), 16 (code)] activations
    epilogue: gl.BlockedLayout  # [ROWS, BT]: a thread holds a gate/up row pair
    out: gl.BlockedLayout  # [rows out, BT]: consecutive columns across lanes


@functools.cache
def _layouts(rows: int, warps: int, block_t: int) -> _Layouts:
    """The register, lane and warp bases of each tensor, from mma.sync's m16n8k16 fragment layout."""
    repeats = rows // (16 * warps)
    if rows % (16 * warps) or repeats & (repeats - 1) or block_t not in (8, 16, 32) or warps & (warps - 1):
        raise ValueError(f"no MMA tiling for rows={rows}, warps={warps}, block_t={block_t}")
    warp_bits, row_bits, token_bits = int(math.log2(warps)), int(math.log2(repeats)), int(math.log2(block_t // 8))
    w_load = gl.DistributedLinearLayout(
        reg_bases=[[0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 1, 0], [8, 0, 0, 0]]
        + [[16 * warps << i, 0, 0, 0] for i in range(row_bits)],
        lane_bases=[
            [0, 1, 0, 0],
            [0, 2, 0, 0],
            [1, 0, 0, 0],
            [2, 0, 0, 0],
            [4, 0, 0, 0],
        ],  # t = lane % 4, g = lane // 4
        warp_bases=[[16 << i, 0, 0, 0] for i in range(warp_bits)],
        block_bases=[],
        shape=[rows, 4, 2, 4],
    )
    x_load = gl.DistributedLinearLayout(
        reg_bases=[[0, 0, 1], [0, 0, 2], [0, 0, 4], [0, 0, 8]] + [[8 << i, 0, 0] for i in range(token_bits)],
        lane_bases=[[0, 1, 0], [0, 2, 0], [1, 0, 0], [2, 0, 0], [4, 0, 0]],
        warp_bases=[[0, 0, 0]] * warp_bits,
        block_bases=[],
        shape=[block_t, 4, 16],
    )
    mma = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[warps, 1], instr_shape=[16, 8])
    return _Layouts(
        mma=mma,
        a_op=gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2),
        b_op=gl.DotOperandLayout(operand_index=1, parent=mma, k_width=2),
        w_load=w_load,
        x_load=x_load,
        epilogue=gl.BlockedLayout(
            size_per_thread=[2, 1], threads_per_warp=[32, 1], warps_per_cta=[warps, 1], order=[0, 1]
        ),
        out=gl.BlockedLayout(size_per_thread=[1, 1], threads_per_warp=[32, 1], warps_per_cta=[warps, 1], order=[0, 1]),
    )


@gluon.jit
def _wait_for_previous_kernel(PDL: gl.constexpr):
    if PDL:
        gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)
        gl.inline_asm_elementwise(
            "griddepcontrol.launch_dependents; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1
        )


@gluon.jit
def _load_weights(w_ptrs, s_ptrs, chunk, NC: gl.constexpr, TILED: gl.constexpr):
    """One 64-code chunk (chunk index clamped to the last): words [ROWS, 4, 2] int32 (thread t's bytes
    8t..8t+7 of a row) and their group's scale multiplier [ROWS, 4] fp16, 2^(s - 121 + SCALE_BIAS).
    A chunk is the next 8 words / 2 scale bytes of a row, or in 16-row tiles the next tile column."""
    c = gl.minimum(chunk, NC - 1)
    if TILED:
        words = gl.load(w_ptrs + c * 128)
        s = gl.load(s_ptrs + c * 32).to(gl.int32)
    else:
        words = gl.load(w_ptrs + c * 8)
        s = gl.load(s_ptrs + c * 2).to(gl.int32)
    scale = ((s + (SCALE_BIAS_G - 106)) << 10).to(gl.int16).to(gl.float16, bitcast=True)
    return words, scale


@gluon.jit
def _chunk_mma(acc, words, scale, x, ROWS: gl.constexpr, BT: gl.constexpr, L: gl.constexpr, PTX: gl.constexpr):
    """acc + the chunk's scaled weights @ activations, as four k16 MMAs."""
    # each word broadcast over its four bytes' positions: one asm call per word, no byte unpacking
    shape: gl.constexpr = [ROWS, 4, 2, 4]
    wb = gl.broadcast(gl.expand_dims(words, 3), gl.full(shape, 0, gl.int32, L.w_load))[0]
    sb = gl.broadcast(gl.expand_dims(gl.expand_dims(scale, 2), 3), gl.full(shape, 0, gl.float16, L.w_load))[0]
    first, second = gl.inline_asm_elementwise(
        PTX, "=r,=r,=r,=r,r,r,r,r,r,r", [wb, sb], dtype=(gl.float16, gl.float16), is_pure=True, pack=4
    )
    # thread t's code 8w + 4i + 2j + e (word w, half i, byte pair j) -> tile (w, i), k = 8j + 2t + e
    codes = gl.join(first, second).reshape([ROWS, 4, 2, 2, 2, 2])  # [R, t, w, j, e, i]
    codes = codes.permute((0, 3, 1, 4, 2, 5)).reshape([ROWS, 16, 2, 2])  # [R, k, w, i]
    a_w0, a_w1 = gl.split(codes.permute((0, 1, 3, 2)))
    a00, a01 = gl.split(a_w0)
    a10, a11 = gl.split(a_w1)
    xs = x.reshape([BT, 4, 2, 2, 2, 2])  # [n, t, w, i, j, e]
    xs = xs.permute((4, 1, 5, 0, 3, 2)).reshape([16, BT, 2, 2])  # [k, n, i, w]
    b_w0, b_w1 = gl.split(xs)
    b00, b01 = gl.split(b_w0)
    b10, b11 = gl.split(b_w1)
    acc = _tile_mma(acc, a00, b00, L)
    acc = _tile_mma(acc, a01, b01, L)
    acc = _tile_mma(acc, a10, b10, L)
    return _tile_mma(acc, a11, b11, L)


@gluon.jit
def _tile_mma(acc, a, b, L: gl.constexpr):
    """One k16 MMA; the operands already sit in their fragment registers (the conversions move nothing)."""
    return mma_v2(
        gl.convert_layout(a, L.a_op, assert_trivial=True), gl.convert_layout(b, L.b_op, assert_trivial=True), acc
    )


@gluon.jit(do_not_specialize=["num_pairs"])  # one binary for every batch (no compile mid-serving)
def _moe_mma_kernel(
    a_ptr,
    sorted_pair_ids_ptr,
    block_expert_ptr,
    w_ptr,
    s_ptr,
    bias_ptr,
    route_w_ptr,
    out_ptr,
    num_pairs,
    stride_a,
    stride_we,
    stride_wn,
    stride_se,
    stride_sn,
    stride_be,
    stride_out,
    K: gl.constexpr,
    TOP_K: gl.constexpr,
    A_ROWS_ARE_TOKENS: gl.constexpr,
    FUSE_SWIGLU: gl.constexpr,
    APPLY_ROUTE_WEIGHT: gl.constexpr,
    ROWS: gl.constexpr,
    BT: gl.constexpr,
    L: gl.constexpr,
    PTX: gl.constexpr,
    SWIGLU_LIMIT: gl.constexpr,
    SWIGLU_ALPHA: gl.constexpr,
    TILED: gl.constexpr,
    PDL: gl.constexpr,
):
    _wait_for_previous_kernel(PDL)
    pid_b = gl.program_id(0)
    pid_n = gl.program_id(1)
    expert = gl.load(block_expert_ptr + pid_b).to(gl.int64)
    if expert >= 0:
        # weight words and scale bytes of this program's rows; activation rows of the block's tokens
        W3: gl.constexpr = gl.SliceLayout(3, L.w_load)
        row = pid_n * ROWS + gl.arange(0, ROWS, layout=gl.SliceLayout(1, gl.SliceLayout(2, W3)))
        t_w = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(2, W3)))
        word = gl.arange(0, 2, layout=gl.SliceLayout(0, gl.SliceLayout(1, W3)))
        if TILED:  # expert_layout: 16-row tiles, each tile column 16 rows x 8 words / 2 scale bytes
            w_rows = w_ptr + expert * stride_we + (row // 16).to(gl.int64) * (16 * stride_wn) + (row % 16) * 8
        else:
            w_rows = w_ptr + expert * stride_we + row.to(gl.int64) * stride_wn
        w_ptrs = w_rows[:, None, None] + (t_w * 2)[None, :, None] + word[None, None, :]
        S2: gl.constexpr = gl.SliceLayout(2, W3)
        row_s = pid_n * ROWS + gl.arange(0, ROWS, layout=gl.SliceLayout(1, S2))
        t_s = gl.arange(0, 4, layout=gl.SliceLayout(0, S2))
        if TILED:
            s_rows = s_ptr + expert * stride_se + (row_s // 16).to(gl.int64) * (16 * stride_sn) + (row_s % 16) * 2
        else:
            s_rows = s_ptr + expert * stride_se + row_s.to(gl.int64) * stride_sn
        s_ptrs = s_rows[:, None] + (t_s // 2)[None, :]
        tok = gl.arange(0, BT, layout=gl.SliceLayout(1, gl.SliceLayout(2, L.x_load)))
        pair_x = gl.load(sorted_pair_ids_ptr + pid_b * BT + tok)
        a_row = gl.where(pair_x < num_pairs, pair_x, 0)  # padding rows read row 0; never stored
        if A_ROWS_ARE_TOKENS:
            a_row = a_row // TOP_K
        t_x = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(2, L.x_load)))
        c_x = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(1, L.x_load)))
        x_ptrs = (a_ptr + a_row.to(gl.int64) * stride_a)[:, None, None] + (t_x * 16)[None, :, None] + c_x[None, None, :]

        # three chunks of weights in flight ahead of the one multiplied, the next chunk's activations. ptxas
        # issues a step's loads late in the step, so they are used a whole step after they are issued; more
        # steps ahead cost registers, hence warps an SM, and run slower
        NC: gl.constexpr = K // 64
        acc = gl.full([ROWS, BT], 0.0, gl.float32, L.mma)
        w0, s0 = _load_weights(w_ptrs, s_ptrs, 0, NC, TILED)
        w1, s1 = _load_weights(w_ptrs, s_ptrs, 1, NC, TILED)
        w2, s2 = _load_weights(w_ptrs, s_ptrs, 2, NC, TILED)
        x0 = gl.load(x_ptrs)
        for c in range(0, NC, 3):
            w3, s3 = _load_weights(w_ptrs, s_ptrs, c + 3, NC, TILED)
            x1 = gl.load(x_ptrs + (c + 1) * 64)
            acc = _chunk_mma(acc, w0, s0, x0, ROWS, BT, L, PTX)
            w4, s4 = _load_weights(w_ptrs, s_ptrs, c + 4, NC, TILED)
            x2 = gl.load(x_ptrs + (c + 2) * 64)
            acc = _chunk_mma(acc, w1, s1, x1, ROWS, BT, L, PTX)
            w5, s5 = _load_weights(w_ptrs, s_ptrs, c + 5, NC, TILED)
            x0 = gl.load(x_ptrs + gl.minimum(c + 3, NC - 1) * 64)
            acc = _chunk_mma(acc, w2, s2, x2, ROWS, BT, L, PTX)
            w0, s0, w1, s1, w2, s2 = w3, s3, w4, s4, w5, s5

        bias = gl.load(
            bias_ptr + expert * stride_be + pid_n * ROWS + gl.arange(0, ROWS, layout=gl.SliceLayout(1, L.mma))
        ).to(gl.float32)
        acc = acc * UNBIAS_G + bias[:, None]
        if FUSE_SWIGLU:
            pairs = gl.convert_layout(acc, L.epilogue).reshape([ROWS // 2, 2, BT]).permute((0, 2, 1))
            gate, up = gl.split(pairs)
            gate = gl.minimum(gate, SWIGLU_LIMIT)
            up = gl.minimum(gl.maximum(up, -SWIGLU_LIMIT), SWIGLU_LIMIT)
            result = gl.convert_layout((up + 1.0) * gate / (1.0 + gl.exp(-SWIGLU_ALPHA * gate)), L.out)
            COLS: gl.constexpr = ROWS // 2
        else:
            result = gl.convert_layout(acc, L.out)
            COLS: gl.constexpr = ROWS
        tok_o = gl.arange(0, BT, layout=gl.SliceLayout(0, L.out))
        pair_o = gl.load(sorted_pair_ids_ptr + pid_b * BT + tok_o)
        valid = pair_o < num_pairs
        safe_pair = gl.where(valid, pair_o, 0)
        if APPLY_ROUTE_WEIGHT:
            result = result * gl.load(route_w_ptr + safe_pair)[None, :]
        col = pid_n * COLS + gl.arange(0, COLS, layout=gl.SliceLayout(1, L.out))
        out_ptrs = out_ptr + safe_pair.to(gl.int64)[None, :] * stride_out + col[:, None]
        gl.store(out_ptrs, result.to(out_ptr.dtype.element_ty), mask=valid[None, :])


def scale_bytes_fit(smallest: int, largest: int) -> bool:
    """Whether weights with scale bytes in [smallest, largest] enter the fp16 MMAs exactly."""
    return SCALE_BYTE_RANGE[0] <= smallest and largest <= SCALE_BYTE_RANGE[1]


def normed_inputs_fit(norm_weight_max: float, hidden_size: int) -> bool:
    """Whether RMSNorm outputs (the gate_up input) stay inside fp16: |x / rms(x)| <= sqrt(hidden_size), so
    |output| <= sqrt(hidden_size) * the largest norm weight. (The down input, the clamped SwiGLU, is
    within (limit + 1) * limit.)"""
    return math.sqrt(hidden_size) * norm_weight_max < float(torch.finfo(torch.float16).max)


def supports(hidden_size: int, intermediate: int, config: MmaTileConfig | None = None) -> bool:
    """Shapes this kernel tiles exactly: both K multiples of the groups a loop step takes, rows multiples of the tiles."""
    cfg = config or MmaTileConfig()
    step = 64 * CHUNKS_PER_STEP
    return (
        hidden_size % step == 0
        and intermediate % step == 0
        and (2 * intermediate) % cfg.rows_gate_up == 0
        and hidden_size % cfg.rows_down == 0
    )


def _launch(a, blocks, w_blocks, w_scales, bias, route_w, out, *, rows, top_k, tokens_as_rows, swiglu, cfg, tiled):
    num_experts, n_rows, groups, _ = w_blocks.shape
    w = w_blocks.view(torch.int32).view(num_experts, n_rows, groups * 4)  # [E, N, K/8] words
    grid = (blocks.block_expert.numel(), n_rows // rows)
    pdl = use_pdl(a)
    _moe_mma_kernel[grid](
        a,
        blocks.sorted_pair_ids,
        blocks.block_expert,
        w,
        w_scales,
        bias,
        route_w if route_w is not None else bias,
        out,
        blocks.num_pairs,
        a.stride(0),
        w.stride(0),
        w.stride(1),
        w_scales.stride(0),
        w_scales.stride(1),
        bias.stride(0),
        out.stride(0),
        K=groups * 32,
        TOP_K=top_k,
        A_ROWS_ARE_TOKENS=tokens_as_rows,
        FUSE_SWIGLU=swiglu,
        APPLY_ROUTE_WEIGHT=route_w is not None,
        ROWS=rows,
        BT=cfg.block_t,
        L=_layouts(rows, cfg.num_warps, cfg.block_t),
        PTX=_WORD_TO_F16_PTX,
        SWIGLU_LIMIT=SWIGLU_LIMIT,
        SWIGLU_ALPHA=SWIGLU_ALPHA,
        TILED=tiled,
        PDL=pdl,
        num_warps=cfg.num_warps,
        launch_pdl=pdl,
    )


def mxfp4_moe_mma_partials(
    hidden: torch.Tensor,  # [T, D] bf16
    topk_ids: torch.Tensor,  # [T, k] int
    topk_weights: torch.Tensor,  # [T, k] float
    weights: MoeWeights,  # the layer's experts
    config: MmaTileConfig | None = None,
    tiled: bool = False,  # the blocks and scales in 16-row tiles (expert_layout)
    hidden_f16: torch.Tensor | None = None,  # hidden in fp16, when the caller has it
) -> torch.Tensor:
    """Experts of a decode batch -> per-pair results [T, k, D] (routing weight applied), hidden's dtype.

    Exact only for scale bytes within SCALE_BYTE_RANGE and hidden states inside fp16's range (the caller
    checks once: `scale_bytes_fit`, `normed_inputs_fit`)."""
    top_k = topk_ids.shape[1]
    cfg = config or MmaTileConfig()
    if not supports(hidden.shape[1], weights.intermediate_size, cfg):
        raise ValueError(f"{cfg} does not tile hidden size {hidden.shape[1]}, intermediate {weights.intermediate_size}")
    blocks = align_pairs_to_experts(topk_ids, weights.num_experts, cfg.block_t)

    def project(a: torch.Tensor, out: torch.Tensor, route_w: torch.Tensor | None) -> None:
        gate_up = route_w is None
        _launch(
            a,
            blocks,
            *(weights.gate_up if gate_up else weights.down),
            route_w,
            out,
            rows=cfg.rows_gate_up if gate_up else cfg.rows_down,
            top_k=top_k,
            tokens_as_rows=gate_up,
            swiglu=gate_up,
            cfg=cfg,
            tiled=tiled,
        )

    # fp16 operands: one conversion of the hidden states (the caller's, or here) instead of one per warp and tile
    if hidden_f16 is None:
        hidden_f16 = hidden.to(torch.float16)
    return expert_projections(
        hidden_f16,
        topk_ids,
        topk_weights,
        weights.intermediate_size,
        project,
        act_dtype=torch.float16,
        out_dtype=hidden.dtype,
    )
