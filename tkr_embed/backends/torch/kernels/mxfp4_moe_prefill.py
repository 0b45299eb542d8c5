"""MXFP4 MoE for large prefill batches: each expert's weights dequantized once, then grouped GEMMs.

At thousands of tokens the grouped Triton kernel dequantizes an expert's weight tile once per block of
128 rows, so ~8 times per expert at 8,192 tokens, and its tensor-core loop is bound by that work. Here
the experts are dequantized to bf16 once a layer (a few experts at a time, into SCRATCH_BYTES), and
torch's grouped GEMM (`torch._grouped_mm`, CUTLASS on Hopper) multiplies each expert's rows:

1. the (token, expert) pairs sorted by expert; their activation rows gathered [P, D];
2. gate_up = x @ W_gu[e]^T per expert; + bias and the clamped SwiGLU in one kernel -> act [P, I];
3. down = act @ W_dn[e]^T per expert -> `SortedPairRows`: the rows stay sorted by expert; the next residual
   RMSNorm reads each pair's row, adds its expert's bias and applies its routing weight on the way
   (`fused_ops.add_rms_norm`), so no kernel writes them back in pair order. `materialize` does, for callers
   that want the per-pair results [T, k, D].

The GEMM outputs are rounded to bf16 before the bias (the Triton kernels add it in fp32): within the
tolerance of the float32 reference. When the experts fit the scratch at once (20b) the grouped GEMMs
take their row offsets on the device; when they are chunked (120b) one host sync a layer reads the
experts' row counts. Either way not CUDA-graph capturable (prefill runs eagerly).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.expert_layout import col_offset, row_start
from tkr_embed.backends.torch.kernels.moe_weights import MoeWeights
from tkr_embed.backends.torch.kernels.mxfp4_reference import SWIGLU_ALPHA, SWIGLU_LIMIT
from tkr_embed.backends.torch.kernels.mxfp4_tile import dequant_bf16, use_asm

SCRATCH_BYTES = 1 << 30  # bf16 weights of the experts dequantized at a time (20b gate_up: all 32)
CHUNK_TOKENS = 32768  # tokens a call takes at once (larger batches in chunks): bounds the working
# set, ~130 KB a token (pairs' rows, gate_up outputs, SwiGLU results)
DEQUANT_GROUPS = 64  # 32-value groups a program dequantizes


@triton.jit
def _dequant_kernel(
    blocks_ptr,
    scales_ptr,
    out_ptr,
    num_groups,
    G: tl.constexpr,
    BLOCK: tl.constexpr,
    ASM: tl.constexpr,
    TILED: tl.constexpr,
):
    """Flat groups (row * G + group, rows of all experts): blocks [n, 16] uint8, scales [n] uint8 (in
    expert_layout's order) -> out [n, 32] bf16 in checkpoint order (low nibble first)."""
    groups = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = groups < num_groups
    row, group = groups // G, groups % G
    offs_b = tl.arange(0, 16)
    b_ptrs = (
        blocks_ptr
        + row_start(row, G * 16, 32, TILED)[:, None]
        + col_offset(group[:, None] * 16 + offs_b[None, :], 32, TILED)
    )
    packed = tl.load(b_ptrs, mask=valid[:, None], other=0)
    scales = tl.load(scales_ptr + row_start(row, G, 2, TILED) + col_offset(group, 2, TILED), mask=valid, other=127)
    values = dequant_bf16(packed, scales[:, None], BLOCK, 32, ASM)  # [BLOCK, 32]
    tl.store(out_ptr + groups[:, None] * 32 + tl.arange(0, 32)[None, :], values, mask=valid[:, None])


@triton.jit
def _bias_swiglu_kernel(
    y_ptr,
    expert_ptr,
    bias_ptr,
    act_ptr,
    I,
    stride_y,
    stride_be,
    stride_act,
    BLOCK: tl.constexpr,
    LIMIT: tl.constexpr,
    ALPHA: tl.constexpr,
):
    """Row r of y [P, 2I] (interleaved gate/up) + its expert's bias -> clamped SwiGLU -> act [P, I]. Each gate/up
    pair is one contiguous load ([BLOCK, 2], split in registers), not two loads of every other value."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < I
    expert = tl.load(expert_ptr + row).to(tl.int64)
    pairs = 2 * offs[:, None] + tl.arange(0, 2)[None, :]  # [BLOCK, 2]
    both = tl.load(y_ptr + row * stride_y + pairs, mask=valid[:, None], other=0.0).to(tl.float32)
    both += tl.load(bias_ptr + expert * stride_be + pairs, mask=valid[:, None], other=0.0).to(tl.float32)
    gate, up = tl.split(both)
    gate = tl.minimum(gate, LIMIT)
    up = tl.minimum(tl.maximum(up, -LIMIT), LIMIT)
    act = (up + 1.0) * gate * tl.sigmoid(ALPHA * gate)
    tl.store(act_ptr + row * stride_act + offs, act.to(act_ptr.dtype.element_ty), mask=valid)


@triton.jit
def pair_result(
    rows_ptr, row_of_pair_ptr, pair_expert_ptr, bias_ptr, route_w_ptr, pair, offs, mask, stride_rows, stride_be
):
    """Pair `pair`'s result over columns `offs`: (its sorted row + its expert's bias) * its routing weight, computed
    in float32 and rounded to the rows' dtype (what `materialize` writes and `add_rms_norm` sums)."""
    row = tl.load(row_of_pair_ptr + pair).to(tl.int64)
    expert = tl.load(pair_expert_ptr + pair).to(tl.int64)
    z = tl.load(rows_ptr + row * stride_rows + offs, mask=mask, other=0.0).to(tl.float32)
    z += tl.load(bias_ptr + expert * stride_be + offs, mask=mask, other=0.0).to(tl.float32)
    z *= tl.load(route_w_ptr + pair)
    return z.to(rows_ptr.dtype.element_ty)


@triton.jit
def _materialize_kernel(
    rows_ptr,
    row_of_pair_ptr,
    pair_expert_ptr,
    bias_ptr,
    route_w_ptr,
    out_ptr,
    D,
    stride_rows,
    stride_be,
    stride_out,
    BLOCK: tl.constexpr,
):
    """Pair p's result -> out[p] [T*k, D]."""
    pair = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < D
    z = pair_result(
        rows_ptr, row_of_pair_ptr, pair_expert_ptr, bias_ptr, route_w_ptr, pair, offs, valid, stride_rows, stride_be
    )
    tl.store(out_ptr + pair * stride_out + offs, z, mask=valid)


class SortedPairRows(NamedTuple):
    """The prefill MoE's per-pair results before the down bias, the routing weight and the return to pair order."""

    rows: torch.Tensor  # [P, D], the down GEMM's rows sorted by expert
    row_of_pair: torch.Tensor  # [T*k] int64: pair p's row
    pair_expert: torch.Tensor  # [T*k]: pair p's expert
    bias: torch.Tensor  # [E, D] the down projection's bias
    route_w: torch.Tensor  # [T*k] float32
    top_k: int

    @property
    def num_tokens(self) -> int:
        return self.row_of_pair.shape[0] // self.top_k

    def materialize(self) -> torch.Tensor:
        """-> the per-pair results [T, k, D] in the rows' dtype."""
        num_pairs, hidden_size = self.row_of_pair.shape[0], self.rows.shape[1]
        out = torch.empty(num_pairs, hidden_size, dtype=self.rows.dtype, device=self.rows.device)
        block = 512
        _materialize_kernel[(num_pairs, triton.cdiv(hidden_size, block))](
            self.rows,
            self.row_of_pair,
            self.pair_expert,
            self.bias,
            self.route_w,
            out,
            hidden_size,
            self.rows.stride(0),
            self.bias.stride(0),
            out.stride(0),
            BLOCK=block,
            num_warps=4,
        )
        return out.view(self.num_tokens, self.top_k, hidden_size)

    @staticmethod
    def concat(parts: list[SortedPairRows]) -> SortedPairRows:
        """Consecutive token chunks' rows as one batch's."""
        firsts = itertools.accumulate([0] + [part.rows.shape[0] for part in parts[:-1]])
        return parts[0]._replace(
            rows=torch.cat([part.rows for part in parts]),
            row_of_pair=torch.cat([part.row_of_pair + first for part, first in zip(parts, firsts, strict=False)]),
            pair_expert=torch.cat([part.pair_expert for part in parts]),
            route_w=torch.cat([part.route_w for part in parts]),
        )


def dequantize_experts(
    blocks: torch.Tensor, scales: torch.Tensor, out: torch.Tensor | None = None, tiled: bool = False
) -> torch.Tensor:
    """blocks [E, N, K/32, 16] uint8, scales [E, N, K/32] uint8 (tiled: in 16-row tiles, expert_layout)
    -> [E, N, K] bf16 in checkpoint order (into `out` if given)."""
    experts, rows, groups, _ = blocks.shape
    num_groups = experts * rows * groups
    if out is None:
        out = torch.empty(experts, rows, groups * 32, dtype=torch.bfloat16, device=blocks.device)
    _dequant_kernel[(triton.cdiv(num_groups, DEQUANT_GROUPS),)](
        blocks.contiguous(),
        scales.contiguous(),
        out,
        num_groups,
        G=groups,
        BLOCK=DEQUANT_GROUPS,
        ASM=use_asm(blocks),
        TILED=tiled,
        num_warps=4,
    )
    return out


class _ExpertRows:
    """How many sorted rows each expert owns: cumulative offsets on the device (enough when every expert
    fits the scratch at once), and the counts on the host, read (one sync) only when chunking needs them."""

    def __init__(self, counts: torch.Tensor) -> None:
        self.counts = counts  # [E] on the device
        self.offsets = torch.cumsum(counts, 0).to(torch.int32)  # [E]
        self._host: list[int] | None = None

    def host(self) -> list[int]:
        if self._host is None:
            self._host = self.counts.tolist()
        return self._host


def _grouped_projection(x: torch.Tensor, rows_of: _ExpertRows, blocks, scales, scratch, tiled: bool) -> torch.Tensor:
    """Rows x [P, K] sorted by expert @ each expert's W^T -> [P, N] bf16, dequantizing the experts into
    `scratch` (a chunk of experts at a time when they do not fit: then the counts are read on the host)."""
    experts, rows, groups, _ = blocks.shape
    per_chunk = max(1, scratch.numel() // (rows * groups * 32))
    if per_chunk >= experts:  # one chunk: no host sync, the GEMM's own output is the result
        weights = scratch[: experts * rows * groups * 32].view(experts, rows, groups * 32)
        dequantize_experts(blocks, scales, weights, tiled)
        return torch._grouped_mm(x, weights.transpose(-2, -1), offs=rows_of.offsets)
    counts = rows_of.host()
    out = torch.empty(x.shape[0], rows, dtype=torch.bfloat16, device=x.device)
    start = 0
    for e0 in range(0, experts, per_chunk):
        e1 = min(experts, e0 + per_chunk)
        chunk_counts = counts[e0:e1]
        end = start + sum(chunk_counts)
        if end > start:
            weights = scratch[: (e1 - e0) * rows * groups * 32].view(e1 - e0, rows, groups * 32)
            dequantize_experts(blocks[e0:e1], scales[e0:e1], weights, tiled)
            offsets = torch.tensor(list(itertools.accumulate(chunk_counts)), dtype=torch.int32).to(x.device)
            out[start:end] = torch._grouped_mm(x[start:end], weights.transpose(-2, -1), offs=offsets)
        start = end
    return out


def mxfp4_moe_prefill_rows(
    hidden: torch.Tensor,  # [T, D] bf16
    topk_ids: torch.Tensor,  # [T, k] int
    topk_weights: torch.Tensor,  # [T, k] float
    weights: MoeWeights,  # the layer's experts
    tiled: bool = False,  # the blocks and scales in 16-row tiles (expert_layout)
) -> SortedPairRows:
    """Experts for a large batch -> their per-pair results as rows sorted by expert (see `SortedPairRows`)."""
    num_tokens = hidden.shape[0]
    if num_tokens > CHUNK_TOKENS:  # each chunk dequantizes the experts again (~0.7 ms a layer on an H100)
        return SortedPairRows.concat(
            [
                mxfp4_moe_prefill_rows(
                    hidden[i : i + CHUNK_TOKENS],
                    topk_ids[i : i + CHUNK_TOKENS],
                    topk_weights[i : i + CHUNK_TOKENS],
                    weights,
                    tiled=tiled,
                )
                for i in range(0, num_tokens, CHUNK_TOKENS)
            ]
        )
    top_k = topk_ids.shape[1]
    gate_up_blocks, gate_up_scales, gate_up_bias, down_blocks, down_scales, down_bias = weights
    num_experts, rows_gu = gate_up_blocks.shape[:2]
    intermediate = rows_gu // 2
    pair_expert = topk_ids.reshape(-1)  # int32 from the router: a radix sort of half the passes of int64
    order = torch.argsort(pair_expert, stable=True)  # [P] pairs by expert
    sorted_expert = pair_expert.index_select(0, order)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=hidden.device)  # (bincount would sync)
    rows_of = _ExpertRows(counts.index_add_(0, pair_expert, torch.ones_like(pair_expert, dtype=torch.int64)))
    x = hidden.index_select(0, order // top_k)  # [P, D]
    scratch = torch.empty(SCRATCH_BYTES // 2, dtype=torch.bfloat16, device=hidden.device)
    y = _grouped_projection(x, rows_of, gate_up_blocks, gate_up_scales, scratch, tiled)  # [P, 2I]
    act = torch.empty(x.shape[0], intermediate, dtype=hidden.dtype, device=hidden.device)
    block = 512
    _bias_swiglu_kernel[(x.shape[0], triton.cdiv(intermediate, block))](
        y,
        sorted_expert,
        gate_up_bias,
        act,
        intermediate,
        y.stride(0),
        gate_up_bias.stride(0),
        act.stride(0),
        BLOCK=block,
        LIMIT=SWIGLU_LIMIT,
        ALPHA=SWIGLU_ALPHA,
        num_warps=4,
    )
    del y
    z = _grouped_projection(act, rows_of, down_blocks, down_scales, scratch, tiled)  # [P, D]
    row_of_pair = torch.empty_like(order).index_copy_(0, order, torch.arange(order.shape[0], device=order.device))
    return SortedPairRows(
        z, row_of_pair, pair_expert, down_bias, topk_weights.reshape(-1).to(torch.float32).contiguous(), top_k
    )


def mxfp4_moe_prefill_partials(
    hidden: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    weights: MoeWeights,
    tiled: bool = False,
) -> torch.Tensor:
    """Experts for a large batch -> per-pair results [T, k, D] (routing weight applied)."""
    return mxfp4_moe_prefill_rows(hidden, topk_ids, topk_weights, weights, tiled=tiled).materialize()
