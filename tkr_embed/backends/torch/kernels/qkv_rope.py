"""The q/k/v projection of one token with RoPE and the KV-cache write in its epilogue (batch-1 decode).

At one token `dense_gemv` and `fused_ops.rope_write_kv` are two launches a layer. Here each program owns
two rotation pairs of one head: rows (j, j+1) and their partners (j + D/2, j + 1 + D/2), so the
rotation needs nothing from another program. Query heads are written rotated to q, key heads rotated and
value heads as they are to the token's slot of the paged cache. The roundings are those of the two
kernels: the projection in the model dtype, plus the bias, rounded again, then rotated in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.pdl import pdl_launch, wait_for_previous_kernel

ROPE_IN_QKV_GEMV = True   # module switch (an A/B run can turn it off)
BLOCK_K = 512
NUM_WARPS = 2


@triton.jit
def _qkv_rope_kernel(x_ptr, w_ptr, b_ptr, cos_ptr, sin_ptr, slot_ptr, q_ptr, cache_ptr, stride_w, v_offset,
                     K: tl.constexpr, HQ: tl.constexpr, HKV: tl.constexpr, HALF: tl.constexpr,
                     BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr, PDL: tl.constexpr):
    D: tl.constexpr = 2 * HALF
    head = tl.program_id(0) // (HALF // 2)
    j = tl.program_id(0) % (HALF // 2) * 2
    offs_r = tl.arange(0, 4)
    within = j + offs_r % 2 + offs_r // 2 * HALF                       # [4]: j, j+1, j+HALF, j+1+HALF
    rows = head * D + within
    w_rows = w_ptr + rows.to(tl.int64)[:, None] * stride_w            # [4, 1]
    offs_k = tl.arange(0, BLOCK_K)
    w = tl.load(w_rows + offs_k[None, :], mask=(offs_k < K)[None, :], other=0.0)   # constant: before the wait
    wait_for_previous_kernel(PDL)
    x = tl.load(x_ptr + offs_k, mask=offs_k < K, other=0.0)
    acc = tl.zeros((4,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_next = k0 + BLOCK_K + offs_k
        w_next = tl.load(w_rows + offs_next[None, :], mask=(offs_next < K)[None, :], other=0.0)
        x_next = tl.load(x_ptr + offs_next, mask=offs_next < K, other=0.0)
        acc += tl.sum(w.to(tl.float32) * x.to(tl.float32)[None, :], axis=1)
        w, x = w_next, x_next
    dtype = q_ptr.dtype.element_ty
    y = acc.to(dtype).to(tl.float32)                                    # the projection's output
    if HAS_BIAS:
        y = (y + tl.load(b_ptr + rows).to(tl.float32)).to(dtype).to(tl.float32)
    first, second = tl.split(tl.trans(y.reshape(2, 2)))                 # [2] each: rows j, j+1 / their partners
    offs_d = j + tl.arange(0, 2)
    slot = tl.load(slot_ptr).to(tl.int64)
    if head < HQ + HKV:                                                 # q or k: rotate
        cos = tl.load(cos_ptr + offs_d).to(tl.float32)
        sin = tl.load(sin_ptr + offs_d).to(tl.float32)
        new_first = first * cos - second * sin
        new_second = second * cos + first * sin
        if head < HQ:
            base = q_ptr + head * D
        else:
            base = cache_ptr + slot * (HKV * D) + (head - HQ) * D
        tl.store(base + offs_d, new_first.to(dtype))
        tl.store(base + HALF + offs_d, new_second.to(dtype))
    else:
        base = cache_ptr + v_offset + slot * (HKV * D) + (head - HQ - HKV) * D
        tl.store(base + offs_d, first.to(dtype))
        tl.store(base + HALF + offs_d, second.to(dtype))


def qkv_rope_write_kv(
    hidden: torch.Tensor,            # [1, K], normed
    weight: torch.Tensor,            # [(Hq + 2 Hkv) * D, K], rows contiguous
    bias: torch.Tensor | None,       # [(Hq + 2 Hkv) * D]
    cos: torch.Tensor,               # [1, D/2]
    sin: torch.Tensor,               # [1, D/2]
    kv_cache: torch.Tensor,          # [2, blocks, block_size, Hkv, D], contiguous, hidden's dtype
    slot_mapping: torch.Tensor,      # [1] int64
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
) -> torch.Tensor:
    """rope_write_kv(hidden @ weight^T, bias, ...) for one token in one launch -> q [1, Hq, D]."""
    assert hidden.shape[0] == 1 and weight.stride(1) == 1 and head_dim % 4 == 0
    assert kv_cache.dtype == hidden.dtype and kv_cache.is_contiguous()
    q = torch.empty(1, num_heads, head_dim, dtype=hidden.dtype, device=hidden.device)
    grid = ((num_heads + 2 * num_kv_heads) * head_dim // 4,)
    _qkv_rope_kernel[grid](
        hidden.contiguous(), weight, bias if bias is not None else weight, cos.contiguous(), sin.contiguous(),
        slot_mapping, q, kv_cache, weight.stride(0), kv_cache[0].numel(),
        K=hidden.shape[1], HQ=num_heads, HKV=num_kv_heads, HALF=head_dim // 2, BLOCK_K=BLOCK_K,
        HAS_BIAS=bias is not None, num_warps=NUM_WARPS, **pdl_launch(hidden),
    )
    return q
