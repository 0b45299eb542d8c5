"""Triton kernels that fuse the small per-layer ops of the decoder (one launch each instead of 5-20).

- `rms_norm`: RMSNorm in float32, weight applied in float32, result in the input dtype.
- `add_rms_norm`: residual + x (+ bias) -> new residual (rounded to its dtype), and its RMSNorm; x may
  be the MoE's per-pair results [T, k, N], whose k slots are summed in float32 on the way, or the prefill
  MoE's rows sorted by expert (each pair's row gathered, its bias and routing weight applied); optionally
  also the normed rows in fp16 (the MMA experts' operand).
- `rope_write_kv`: the fused QKV projection's output (+ bias) -> rotated queries; rotated keys and the
  values written straight into the paged KV cache at their slots.
- `router_topk`: router logits (split shares of the hidden size for decode batches, `dense_gemv` for one
  token, cuBLAS beyond), then top-k experts and the softmax over the chosen logits in one kernel.

All read only tensors (no host values derived from data), so they can be captured in CUDA graphs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.dense_gemv import linear
from tkr_embed.backends.torch.kernels.mxfp4_moe_prefill import SortedPairRows, pair_result
from tkr_embed.backends.torch.kernels.pdl import pdl_launch, wait_for_previous_kernel


@triton.jit
def _rms_norm_kernel(
    x_ptr,
    res_ptr,
    bias_ptr,
    w_ptr,
    out_ptr,
    res_out_ptr,
    out16_ptr,
    row_of_pair_ptr,
    pair_expert_ptr,
    pair_bias_ptr,
    route_w_ptr,
    N,
    stride_x,
    stride_part,
    stride_res,
    stride_out,
    stride_pair_bias,
    eps,
    HAS_RES: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    PARTS: tl.constexpr,
    PAIR_ROWS: tl.constexpr,
    OUT16: tl.constexpr,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < N
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # a constant: read before the wait
    wait_for_previous_kernel(PDL)
    if PAIR_ROWS:  # x: the prefill MoE's rows sorted by expert; this token's k pairs are rows PARTS*row + j
        x = tl.zeros((BLOCK,), dtype=tl.float32)
        for part in tl.static_range(PARTS):
            x += pair_result(
                x_ptr,
                row_of_pair_ptr,
                pair_expert_ptr,
                pair_bias_ptr,
                route_w_ptr,
                row * PARTS + part,
                offs,
                mask,
                stride_x,
                stride_pair_bias,
            ).to(tl.float32)
    else:
        x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
        for part in tl.static_range(1, PARTS):
            x += tl.load(x_ptr + row * stride_x + part * stride_part + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        x += tl.load(bias_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        x += tl.load(res_ptr + row * stride_res + offs, mask=mask, other=0.0).to(tl.float32)
        rounded = x.to(res_out_ptr.dtype.element_ty)
        tl.store(res_out_ptr + row * N + offs, rounded, mask=mask)
        x = rounded.to(tl.float32)
    inv = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
    normed = (x * inv * w).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + row * stride_out + offs, normed, mask=mask)
    if OUT16:  # the rounded output, as fp16 (as `normed.to(torch.float16)`)
        tl.store(out16_ptr + row * N + offs, normed.to(tl.float16), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [T, N] -> [T, N] in x's dtype."""
    num_rows, width = x.shape
    out = torch.empty_like(x)
    _rms_norm_kernel[(num_rows,)](
        x,
        x,
        x,
        weight,
        out,
        out,
        out,
        x,
        x,
        x,
        x,
        width,
        x.stride(0),
        0,
        x.stride(0),
        out.stride(0),
        0,
        eps,
        HAS_RES=False,
        HAS_BIAS=False,
        PARTS=1,
        PAIR_ROWS=False,
        OUT16=False,
        BLOCK=triton.next_power_of_2(width),
        num_warps=4,
        **pdl_launch(x),
    )
    return out


def add_rms_norm(
    x: torch.Tensor | SortedPairRows,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    bias: torch.Tensor | None = None,
    out_f16: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, N] or [T, k, N] (summed over k) or the prefill MoE's SortedPairRows (its k pairs a token summed, as
    their `materialize` would write them), residual [T, N]
    -> (rms_norm(residual + x + bias) [T, N], residual + x + bias [T, N]); out_f16 [T, N] contiguous, when given,
    receives the first as fp16."""
    num_rows, width = residual.shape
    out = torch.empty_like(residual)
    new_residual = torch.empty_like(residual)
    pair_rows = isinstance(x, SortedPairRows)
    if pair_rows:
        pairs = (x.row_of_pair, x.pair_expert, x.bias, x.route_w)
        parts, stride_part, stride_pair_bias, x = x.top_k, 0, x.bias.stride(0), x.rows
    else:
        parts = x.shape[1] if x.dim() == 3 else 1
        pairs, stride_part, stride_pair_bias = (x, x, x, x), x.stride(1) if parts > 1 else 0, 0
    _rms_norm_kernel[(num_rows,)](
        x,
        residual,
        bias if bias is not None else x,
        weight,
        out,
        new_residual,
        out_f16 if out_f16 is not None else out,
        *pairs,
        width,
        x.stride(0),
        stride_part,
        residual.stride(0),
        out.stride(0),
        stride_pair_bias,
        eps,
        HAS_RES=True,
        HAS_BIAS=bias is not None,
        PARTS=parts,
        PAIR_ROWS=pair_rows,
        OUT16=out_f16 is not None,
        BLOCK=triton.next_power_of_2(width),
        num_warps=4,
        **pdl_launch(x),
    )
    return out, new_residual


@triton.jit
def _rope_write_kv_kernel(
    qkv_ptr,
    bias_ptr,
    cos_ptr,
    sin_ptr,
    slot_ptr,
    q_out_ptr,
    cache_ptr,
    stride_qkv,
    stride_cs,
    v_offset,
    HQ: tl.constexpr,
    HKV: tl.constexpr,
    HALF: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HQ_PAD: tl.constexpr,
    HKV_PAD: tl.constexpr,
    PDL: tl.constexpr,
):
    wait_for_previous_kernel(PDL)
    token = tl.program_id(0).to(tl.int64)
    D: tl.constexpr = 2 * HALF
    offs_d = tl.arange(0, HALF)
    cos = tl.load(cos_ptr + token * stride_cs + offs_d).to(tl.float32)[None, :]  # [1, D/2]
    sin = tl.load(sin_ptr + token * stride_cs + offs_d).to(tl.float32)[None, :]
    row = qkv_ptr + token * stride_qkv

    offs_h = tl.arange(0, HQ_PAD)
    mask_q = (offs_h < HQ)[:, None]
    col = offs_h[:, None] * D + offs_d[None, :]  # [HQ, D/2]
    first = tl.load(row + col, mask=mask_q, other=0.0).to(tl.float32)
    second = tl.load(row + col + HALF, mask=mask_q, other=0.0).to(tl.float32)
    if HAS_BIAS:
        first += tl.load(bias_ptr + col, mask=mask_q, other=0.0).to(tl.float32)
        second += tl.load(bias_ptr + col + HALF, mask=mask_q, other=0.0).to(tl.float32)
    first, second = (
        first.to(q_out_ptr.dtype.element_ty).to(tl.float32),
        second.to(q_out_ptr.dtype.element_ty).to(tl.float32),
    )
    q_row = q_out_ptr + token * (HQ * D)
    tl.store(q_row + col, (first * cos - second * sin).to(q_out_ptr.dtype.element_ty), mask=mask_q)
    tl.store(q_row + col + HALF, (second * cos + first * sin).to(q_out_ptr.dtype.element_ty), mask=mask_q)

    slot = tl.load(slot_ptr + token).to(tl.int64)
    offs_kh = tl.arange(0, HKV_PAD)
    mask_k = (offs_kh < HKV)[:, None]
    kcol = offs_kh[:, None] * D + offs_d[None, :]  # [HKV, D/2]
    k_first = tl.load(row + HQ * D + kcol, mask=mask_k, other=0.0).to(tl.float32)
    k_second = tl.load(row + HQ * D + kcol + HALF, mask=mask_k, other=0.0).to(tl.float32)
    v_first = tl.load(row + (HQ + HKV) * D + kcol, mask=mask_k, other=0.0).to(tl.float32)
    v_second = tl.load(row + (HQ + HKV) * D + kcol + HALF, mask=mask_k, other=0.0).to(tl.float32)
    if HAS_BIAS:
        k_first += tl.load(bias_ptr + HQ * D + kcol, mask=mask_k, other=0.0).to(tl.float32)
        k_second += tl.load(bias_ptr + HQ * D + kcol + HALF, mask=mask_k, other=0.0).to(tl.float32)
        v_first += tl.load(bias_ptr + (HQ + HKV) * D + kcol, mask=mask_k, other=0.0).to(tl.float32)
        v_second += tl.load(bias_ptr + (HQ + HKV) * D + kcol + HALF, mask=mask_k, other=0.0).to(tl.float32)
    dtype = cache_ptr.dtype.element_ty
    k_first, k_second = k_first.to(dtype).to(tl.float32), k_second.to(dtype).to(tl.float32)
    k_slot = cache_ptr + slot * (HKV * D)
    tl.store(k_slot + kcol, (k_first * cos - k_second * sin).to(dtype), mask=mask_k)
    tl.store(k_slot + kcol + HALF, (k_second * cos + k_first * sin).to(dtype), mask=mask_k)
    v_slot = cache_ptr + v_offset + slot * (HKV * D)
    tl.store(v_slot + kcol, v_first.to(dtype), mask=mask_k)
    tl.store(v_slot + kcol + HALF, v_second.to(dtype), mask=mask_k)


def rope_write_kv(
    qkv: torch.Tensor,  # [T, (Hq + 2 Hkv) * D], projection without its bias
    bias: torch.Tensor | None,  # [(Hq + 2 Hkv) * D]
    cos: torch.Tensor,  # [T, D/2]
    sin: torch.Tensor,  # [T, D/2]
    kv_cache: torch.Tensor,  # [2, blocks, block_size, Hkv, D], contiguous
    slot_mapping: torch.Tensor,  # [T] int64
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
) -> torch.Tensor:
    """Rotate q and k (halves layout), write k and v at their slots; -> q [T, Hq, D]."""
    num_tokens = qkv.shape[0]
    q = torch.empty(num_tokens, num_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    cos, sin = cos.contiguous(), sin.contiguous()
    _rope_write_kv_kernel[(num_tokens,)](
        qkv,
        bias if bias is not None else qkv,
        cos,
        sin,
        slot_mapping,
        q,
        kv_cache,
        qkv.stride(0),
        cos.stride(0),
        kv_cache[0].numel(),
        HQ=num_heads,
        HKV=num_kv_heads,
        HALF=head_dim // 2,
        HAS_BIAS=bias is not None,
        HQ_PAD=triton.next_power_of_2(num_heads),
        HKV_PAD=triton.next_power_of_2(num_kv_heads),
        num_warps=4,
        **pdl_launch(qkv),
    )
    return q


@triton.jit(do_not_specialize=["T"])  # one binary for every batch (no compile mid-serving)
def _router_split_kernel(
    x_ptr,
    w_ptr,
    part_ptr,
    T,
    E,
    stride_x,
    stride_w,
    K: tl.constexpr,
    BLOCK_T: tl.constexpr,
    E_PAD: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PDL: tl.constexpr,
):
    """Router logits of BLOCK_T tokens over one SPLIT_K share of the hidden size -> part [S, T, E_PAD] float32."""
    pid_t = tl.program_id(0)
    split = tl.program_id(1)
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    experts = tl.arange(0, E_PAD)
    offs_k = tl.arange(0, BLOCK_K)
    wait_for_previous_kernel(PDL)
    acc = tl.zeros((BLOCK_T, E_PAD), dtype=tl.float32)
    for start in range(0, SPLIT_K, BLOCK_K):
        cols = split * SPLIT_K + start + offs_k
        x = tl.load(
            x_ptr + rows[:, None] * stride_x + cols[None, :], mask=(rows < T)[:, None] & (cols < K)[None, :], other=0.0
        )
        w = tl.load(
            w_ptr + experts[:, None] * stride_w + cols[None, :],
            mask=(experts < E)[:, None] & (cols < K)[None, :],
            other=0.0,
        )
        acc += tl.dot(x, tl.trans(w))
    tl.store(part_ptr + (split * T + rows)[:, None] * E_PAD + experts[None, :], acc, mask=(rows < T)[:, None])


@triton.jit(do_not_specialize=["T"])
def _topk_softmax_kernel(
    logits_ptr,
    bias_ptr,
    ids_ptr,
    weights_ptr,
    E,
    T,
    stride_l,
    TOP_K: tl.constexpr,
    E_PAD: tl.constexpr,
    K_PAD: tl.constexpr,
    SPLITS: tl.constexpr,
    PDL: tl.constexpr,
):
    """One token: its logits (SPLITS > 0: the sum of the router's split shares in a fixed order, + bias, rounded to
    the bias's dtype as the router layer rounds them) -> the TOP_K largest (ties: the lower expert id) and the
    softmax over them."""
    wait_for_previous_kernel(PDL)
    token = tl.program_id(0).to(tl.int64)
    offs_e = tl.arange(0, E_PAD)
    if SPLITS > 0:
        logits = tl.zeros((E_PAD,), dtype=tl.float32)
        for split in tl.static_range(SPLITS):
            logits += tl.load(logits_ptr + (split * T + token) * E_PAD + offs_e)
        logits += tl.load(bias_ptr + offs_e, mask=offs_e < E, other=0.0).to(tl.float32)
        logits = tl.where(offs_e < E, logits.to(bias_ptr.dtype.element_ty).to(tl.float32), float("-inf"))
    else:
        logits = tl.load(logits_ptr + token * stride_l + offs_e, mask=offs_e < E, other=float("-inf")).to(tl.float32)
    offs_k = tl.arange(0, K_PAD)
    top_vals = tl.full((K_PAD,), float("-inf"), dtype=tl.float32)
    top_ids = tl.zeros((K_PAD,), dtype=tl.int32)
    for j in tl.static_range(TOP_K):
        best = tl.max(logits, axis=0)
        best_id = tl.min(tl.where(logits == best, offs_e, E_PAD), axis=0)  # ties: the lower expert id
        top_vals = tl.where(offs_k == j, best, top_vals)
        top_ids = tl.where(offs_k == j, best_id, top_ids)
        logits = tl.where(offs_e == best_id, float("-inf"), logits)
    probs = tl.exp(top_vals - tl.max(top_vals, axis=0))
    probs = probs / tl.sum(probs, axis=0)
    k_valid = offs_k < TOP_K
    tl.store(ids_ptr + token * TOP_K + offs_k, top_ids, mask=k_valid)
    tl.store(weights_ptr + token * TOP_K + offs_k, probs, mask=k_valid)


# Decode batches of 2..ROUTER_SPLIT_MAX_TOKENS tokens: the router's logits in ROUTER_SPLITS shares of the hidden
# size, summed by the top-k kernel (two launches, both programmatic-dependent, where cuBLAS took a split-K GEMM
# and its reduction); one token keeps `dense_gemv`, larger batches cuBLAS.
ROUTER_SPLIT_MAX_TOKENS = 128
ROUTER_SPLITS = 9
_ROUTER_BLOCK_K = 64


def router_topk(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, H], weight [E, H], bias [E] -> (ids [T, k] int32, softmax weights [T, k] float32).

    The logits are rounded to the model dtype, as the router layer computes them (cuBLAS, one matrix-vector
    launch for one token, or split shares summed in the top-k kernel); top-k and the softmax over the chosen
    logits run in one kernel.
    """
    num_tokens, hidden = x.shape
    num_experts = weight.shape[0]
    e_pad = max(16, triton.next_power_of_2(num_experts))
    ids = torch.empty(num_tokens, top_k, dtype=torch.int32, device=x.device)
    weights = torch.empty(num_tokens, top_k, dtype=torch.float32, device=x.device)
    if 2 <= num_tokens <= ROUTER_SPLIT_MAX_TOKENS and bias is not None and x.stride(1) == 1 and weight.stride(1) == 1:
        k_blocks = triton.cdiv(hidden, _ROUTER_BLOCK_K)
        split_k = triton.cdiv(k_blocks, min(k_blocks, ROUTER_SPLITS)) * _ROUTER_BLOCK_K
        splits = triton.cdiv(hidden, split_k)
        logits = torch.empty(splits, num_tokens, e_pad, dtype=torch.float32, device=x.device)
        _router_split_kernel[(triton.cdiv(num_tokens, 16), splits)](
            x,
            weight,
            logits,
            num_tokens,
            num_experts,
            x.stride(0),
            weight.stride(0),
            K=hidden,
            BLOCK_T=16,
            E_PAD=e_pad,
            SPLIT_K=split_k,
            BLOCK_K=_ROUTER_BLOCK_K,
            num_warps=4,
            **pdl_launch(x),
        )
    else:
        logits = linear(x, weight, bias)  # [T, E]
        splits = 0
    _topk_softmax_kernel[(num_tokens,)](
        logits,
        bias if bias is not None else logits,
        ids,
        weights,
        num_experts,
        num_tokens,
        logits.stride(0) if splits == 0 else e_pad,
        TOP_K=top_k,
        E_PAD=e_pad,
        K_PAD=triton.next_power_of_2(top_k),
        SPLITS=splits,
        num_warps=1,
        **pdl_launch(x),
    )
    return ids, weights
