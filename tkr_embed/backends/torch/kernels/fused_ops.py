"""Triton kernels that fuse the small per-layer ops of the decoder (one launch each instead of 5-20).

- `rms_norm`: RMSNorm in float32, weight applied in float32, result in the input dtype.
- `add_rms_norm`: residual + x (+ bias) -> new residual (rounded to its dtype), and its RMSNorm; x may
  be the MoE's per-pair results [T, k, N], whose k slots are summed in float32 on the way.
- `rope_write_kv`: the fused QKV projection's output (+ bias) -> rotated queries; rotated keys and the
  values written straight into the paged KV cache at their slots.
- `router_topk`: router logits, top-k experts and the softmax over the chosen logits: one kernel for
  2-128 tokens; otherwise cuBLAS (or `dense_gemv` for one token), then one kernel for the top-k.

All read only tensors (no host values derived from data), so they can be captured in CUDA graphs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.dense_gemv import linear
from tkr_embed.backends.torch.kernels.pdl import pdl_launch, wait_for_previous_kernel


@triton.jit
def _rms_norm_kernel(x_ptr, res_ptr, bias_ptr, w_ptr, out_ptr, res_out_ptr, N, stride_x, stride_part, stride_res,
                     stride_out, eps, HAS_RES: tl.constexpr, HAS_BIAS: tl.constexpr, PARTS: tl.constexpr,
                     BLOCK: tl.constexpr, PDL: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < N
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)      # a constant: read before the wait
    wait_for_previous_kernel(PDL)
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
    tl.store(out_ptr + row * stride_out + offs, (x * inv * w).to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [T, N] -> [T, N] in x's dtype."""
    num_rows, width = x.shape
    out = torch.empty_like(x)
    _rms_norm_kernel[(num_rows,)](x, x, x, weight, out, out, width, x.stride(0), 0, x.stride(0), out.stride(0), eps,
                                  HAS_RES=False, HAS_BIAS=False, PARTS=1, BLOCK=triton.next_power_of_2(width),
                                  num_warps=4, **pdl_launch(x))
    return out


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, N] or [T, k, N] (summed over k), residual [T, N]
    -> (rms_norm(residual + x + bias) [T, N], residual + x + bias [T, N])."""
    parts = x.shape[1] if x.dim() == 3 else 1
    num_rows, width = residual.shape
    out = torch.empty_like(residual)
    new_residual = torch.empty_like(residual)
    _rms_norm_kernel[(num_rows,)](
        x, residual, bias if bias is not None else x, weight, out, new_residual, width,
        x.stride(0), x.stride(1) if parts > 1 else 0, residual.stride(0), out.stride(0), eps,
        HAS_RES=True, HAS_BIAS=bias is not None, PARTS=parts, BLOCK=triton.next_power_of_2(width), num_warps=4,
        **pdl_launch(x),
    )
    return out, new_residual


@triton.jit
def _rope_write_kv_kernel(
    qkv_ptr, bias_ptr, cos_ptr, sin_ptr, slot_ptr, q_out_ptr, cache_ptr,
    stride_qkv, stride_cs, v_offset,
    HQ: tl.constexpr, HKV: tl.constexpr, HALF: tl.constexpr, HAS_BIAS: tl.constexpr,
    HQ_PAD: tl.constexpr, HKV_PAD: tl.constexpr, PDL: tl.constexpr,
):
    wait_for_previous_kernel(PDL)
    token = tl.program_id(0).to(tl.int64)
    D: tl.constexpr = 2 * HALF
    offs_d = tl.arange(0, HALF)
    cos = tl.load(cos_ptr + token * stride_cs + offs_d).to(tl.float32)[None, :]          # [1, D/2]
    sin = tl.load(sin_ptr + token * stride_cs + offs_d).to(tl.float32)[None, :]
    row = qkv_ptr + token * stride_qkv

    offs_h = tl.arange(0, HQ_PAD)
    mask_q = (offs_h < HQ)[:, None]
    col = offs_h[:, None] * D + offs_d[None, :]                                           # [HQ, D/2]
    first = tl.load(row + col, mask=mask_q, other=0.0).to(tl.float32)
    second = tl.load(row + col + HALF, mask=mask_q, other=0.0).to(tl.float32)
    if HAS_BIAS:
        first += tl.load(bias_ptr + col, mask=mask_q, other=0.0).to(tl.float32)
        second += tl.load(bias_ptr + col + HALF, mask=mask_q, other=0.0).to(tl.float32)
    first, second = first.to(q_out_ptr.dtype.element_ty).to(tl.float32), second.to(q_out_ptr.dtype.element_ty).to(tl.float32)
    q_row = q_out_ptr + token * (HQ * D)
    tl.store(q_row + col, (first * cos - second * sin).to(q_out_ptr.dtype.element_ty), mask=mask_q)
    tl.store(q_row + col + HALF, (second * cos + first * sin).to(q_out_ptr.dtype.element_ty), mask=mask_q)

    slot = tl.load(slot_ptr + token).to(tl.int64)
    offs_kh = tl.arange(0, HKV_PAD)
    mask_k = (offs_kh < HKV)[:, None]
    kcol = offs_kh[:, None] * D + offs_d[None, :]                                         # [HKV, D/2]
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
    qkv: torch.Tensor,               # [T, (Hq + 2 Hkv) * D], projection without its bias
    bias: torch.Tensor | None,       # [(Hq + 2 Hkv) * D]
    cos: torch.Tensor,               # [T, D/2]
    sin: torch.Tensor,               # [T, D/2]
    kv_cache: torch.Tensor,          # [2, blocks, block_size, Hkv, D], contiguous
    slot_mapping: torch.Tensor,      # [T] int64
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
) -> torch.Tensor:
    """Rotate q and k (halves layout), write k and v at their slots; -> q [T, Hq, D]."""
    num_tokens = qkv.shape[0]
    q = torch.empty(num_tokens, num_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    cos, sin = cos.contiguous(), sin.contiguous()
    _rope_write_kv_kernel[(num_tokens,)](
        qkv, bias if bias is not None else qkv, cos, sin, slot_mapping, q, kv_cache,
        qkv.stride(0), cos.stride(0), kv_cache[0].numel(),
        HQ=num_heads, HKV=num_kv_heads, HALF=head_dim // 2, HAS_BIAS=bias is not None,
        HQ_PAD=triton.next_power_of_2(num_heads), HKV_PAD=triton.next_power_of_2(num_kv_heads), num_warps=4,
        **pdl_launch(qkv),
    )
    return q


@triton.jit
def _topk_rows(logits, BT: tl.constexpr, E_PAD: tl.constexpr, TOP_K: tl.constexpr, K_PAD: tl.constexpr):
    """logits [BT, E_PAD] fp32 (-inf past the experts) -> the TOP_K largest per row as ids [BT, K_PAD] int32
    (ties: the lower expert id) and the softmax over them [BT, K_PAD] (0 past TOP_K)."""
    offs_e = tl.arange(0, E_PAD)
    offs_k = tl.arange(0, K_PAD)
    top_vals = tl.full((BT, K_PAD), float("-inf"), dtype=tl.float32)
    top_ids = tl.zeros((BT, K_PAD), dtype=tl.int32)
    for j in tl.static_range(TOP_K):
        best = tl.max(logits, axis=1)                                                              # [BT]
        best_id = tl.min(tl.where(logits == best[:, None], offs_e[None, :], E_PAD), axis=1)
        top_vals = tl.where(offs_k[None, :] == j, best[:, None], top_vals)
        top_ids = tl.where(offs_k[None, :] == j, best_id[:, None], top_ids)
        logits = tl.where(offs_e[None, :] == best_id[:, None], float("-inf"), logits)
    probs = tl.exp(top_vals - tl.max(top_vals, axis=1)[:, None])
    return top_ids, probs / tl.sum(probs, axis=1)[:, None]


@triton.jit
def _store_topk(ids_ptr, weights_ptr, rows, row_valid, top_ids, probs, TOP_K: tl.constexpr, K_PAD: tl.constexpr):
    offs_k = tl.arange(0, K_PAD)
    offs = rows.to(tl.int64)[:, None] * TOP_K + offs_k[None, :]
    mask = row_valid[:, None] & (offs_k < TOP_K)[None, :]
    tl.store(ids_ptr + offs, top_ids, mask=mask)
    tl.store(weights_ptr + offs, probs, mask=mask)


@triton.jit
def _topk_softmax_kernel(logits_ptr, ids_ptr, weights_ptr, E, stride_l,
                         TOP_K: tl.constexpr, E_PAD: tl.constexpr, K_PAD: tl.constexpr, PDL: tl.constexpr):
    wait_for_previous_kernel(PDL)
    token = tl.program_id(0) + tl.arange(0, 1)                                                     # [1]
    offs_e = tl.arange(0, E_PAD)
    logits = tl.load(logits_ptr + token.to(tl.int64)[:, None] * stride_l + offs_e[None, :],
                     mask=(offs_e < E)[None, :], other=float("-inf")).to(tl.float32)               # [1, E]
    top_ids, probs = _topk_rows(logits, 1, E_PAD, TOP_K, K_PAD)
    _store_topk(ids_ptr, weights_ptr, token, token >= 0, top_ids, probs, TOP_K, K_PAD)


@triton.jit
def _router_topk_kernel(x_ptr, w_ptr, b_ptr, ids_ptr, weights_ptr, T, E, stride_x, stride_w, K: tl.constexpr,
                        BT: tl.constexpr, BK: tl.constexpr, TOP_K: tl.constexpr, E_PAD: tl.constexpr,
                        K_PAD: tl.constexpr, PDL: tl.constexpr):
    """BT tokens a program: logits = x @ W^T + b on the tensor cores (fp32 sums), rounded to x's dtype as the
    router layer's output is, then top-k and the softmax; one launch instead of three."""
    wait_for_previous_kernel(PDL)
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    row_valid = rows < T
    offs_e = tl.arange(0, E_PAD)
    e_valid = offs_e < E
    offs_k = tl.arange(0, BK)
    x_ptrs = x_ptr + rows.to(tl.int64)[:, None] * stride_x + offs_k[None, :]
    w_ptrs = w_ptr + offs_e[None, :] * stride_w + offs_k[:, None]                                    # [BK, E]
    acc = tl.zeros((BT, E_PAD), dtype=tl.float32)
    for k0 in range(0, K, BK):
        x = tl.load(x_ptrs + k0, mask=row_valid[:, None] & (k0 + offs_k < K)[None, :], other=0.0)
        w = tl.load(w_ptrs + k0, mask=(k0 + offs_k < K)[:, None] & e_valid[None, :], other=0.0)
        acc = tl.dot(x, w, acc)
    acc += tl.load(b_ptr + offs_e, mask=e_valid, other=0.0).to(tl.float32)[None, :]
    logits = acc.to(x_ptr.dtype.element_ty).to(tl.float32)
    logits = tl.where(e_valid[None, :], logits, float("-inf"))
    top_ids, probs = _topk_rows(logits, BT, E_PAD, TOP_K, K_PAD)
    _store_topk(ids_ptr, weights_ptr, rows, row_valid, top_ids, probs, TOP_K, K_PAD)


ROUTER_FUSED_TOKENS = (2, 128)     # batches the one-launch router serves (H100, 64 tokens: 3 launches, 8.5 us)


def router_topk(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, H], weight [E, H], bias [E] -> (ids [T, k] int32, softmax weights [T, k] float32).

    The logits are rounded to the model dtype, as the router layer computes them. For ROUTER_FUSED_TOKENS
    on CUDA one kernel computes them and picks the experts; otherwise cuBLAS (or one matrix-vector
    launch for one token) computes them and one kernel takes the top-k and the softmax over them.
    """
    num_tokens, num_experts = x.shape[0], weight.shape[0]
    ids = torch.empty(num_tokens, top_k, dtype=torch.int32, device=x.device)
    weights = torch.empty(num_tokens, top_k, dtype=torch.float32, device=x.device)
    e_pad, k_pad = max(16, triton.next_power_of_2(num_experts)), triton.next_power_of_2(top_k)
    low, high = ROUTER_FUSED_TOKENS
    if x.is_cuda and low <= num_tokens <= high and x.stride(1) == 1 and weight.stride(1) == 1:
        block_t = 16
        _router_topk_kernel[(triton.cdiv(num_tokens, block_t),)](
            x, weight, bias, ids, weights, num_tokens, num_experts, x.stride(0), weight.stride(0), K=x.shape[1],
            BT=block_t, BK=64, TOP_K=top_k, E_PAD=e_pad, K_PAD=k_pad, num_warps=4, num_stages=4, **pdl_launch(x),
        )
        return ids, weights
    logits = linear(x, weight, bias)                                                      # [T, E]
    _topk_softmax_kernel[(num_tokens,)](
        logits, ids, weights, num_experts, logits.stride(0),
        TOP_K=top_k, E_PAD=e_pad, K_PAD=k_pad, num_warps=1, **pdl_launch(x),
    )
    return ids, weights
