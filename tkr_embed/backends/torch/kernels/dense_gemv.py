"""Triton matrix-vector products for a few tokens (decode): y [T, N] = x [T, K] @ W [N, K]^T (+ bias).

At one token cuBLAS runs the o projection and the router as split-K GEMMs followed by a reduction
kernel (two launches, 11.9 us for the o projection of the 20b shape on an H200). Here one launch reads
each weight row once for all T tokens: a program owns BLOCK_N rows, walks K in blocks whose loads are
issued one block ahead of the multiply-adds, and accumulates in fp32 (9.0 us).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.pdl import pdl_launch, wait_for_previous_kernel


@dataclass(frozen=True)
class DenseGemvConfig:
    block_n: int = 4
    block_k: int = 1024
    num_warps: int = 4


@triton.jit
def _load_block(x_ptr, w_rows, n_valid, k0, stride_x, T, K: tl.constexpr, T_PAD: tl.constexpr, BLOCK_K: tl.constexpr):
    offs_k = k0 + tl.arange(0, BLOCK_K)
    k_valid = offs_k < K
    w = tl.load(w_rows + offs_k[None, :], mask=n_valid[:, None] & k_valid[None, :], other=0.0)  # [BN, BK]
    offs_t = tl.arange(0, T_PAD)
    x = tl.load(
        x_ptr + offs_t[:, None] * stride_x + offs_k[None, :], mask=(offs_t < T)[:, None] & k_valid[None, :], other=0.0
    )  # [T, BK]
    return w, x


@triton.jit
def _dense_gemv_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    T,
    N,
    stride_x,
    stride_w,
    stride_out,
    K: tl.constexpr,
    T_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    PDL: tl.constexpr,
):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_valid = offs_n < N
    w_rows = w_ptr + tl.where(n_valid, offs_n, 0).to(tl.int64)[:, None] * stride_w  # [BN, 1]
    acc = tl.zeros((T_PAD, BLOCK_N), dtype=tl.float32)
    offs_k = tl.arange(0, BLOCK_K)
    w = tl.load(w_rows + offs_k[None, :], mask=n_valid[:, None] & (offs_k < K)[None, :], other=0.0)  # before the wait
    wait_for_previous_kernel(PDL)
    offs_t = tl.arange(0, T_PAD)
    x = tl.load(
        x_ptr + offs_t[:, None] * stride_x + offs_k[None, :],
        mask=(offs_t < T)[:, None] & (offs_k < K)[None, :],
        other=0.0,
    )
    for k0 in range(0, K, BLOCK_K):
        w_next, x_next = _load_block(x_ptr, w_rows, n_valid, k0 + BLOCK_K, stride_x, T, K, T_PAD, BLOCK_K)
        acc += tl.sum(w.to(tl.float32)[None, :, :] * x.to(tl.float32)[:, None, :], axis=2)
        w, x = w_next, x_next
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_valid, other=0.0).to(tl.float32)[None, :]
    tl.store(
        out_ptr + offs_t[:, None] * stride_out + offs_n[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=(offs_t < T)[:, None] & n_valid[None, :],
    )


def dense_gemv(
    x: torch.Tensor,  # [T, K]
    weight: torch.Tensor,  # [N, K], rows contiguous
    bias: torch.Tensor | None = None,
    config: DenseGemvConfig | None = None,
) -> torch.Tensor:
    """x @ weight^T (+ bias) -> [T, N] in x's dtype (fp32 accumulation, one launch)."""
    num_tokens, k = x.shape
    n = weight.shape[0]
    assert weight.stride(1) == 1 and x.stride(1) == 1
    cfg = config or DenseGemvConfig()
    out = torch.empty(num_tokens, n, dtype=x.dtype, device=x.device)
    _dense_gemv_kernel[(triton.cdiv(n, cfg.block_n),)](
        x,
        weight,
        bias if bias is not None else weight,
        out,
        num_tokens,
        n,
        x.stride(0),
        weight.stride(0),
        out.stride(0),
        K=k,
        T_PAD=triton.next_power_of_2(num_tokens),
        BLOCK_N=cfg.block_n,
        BLOCK_K=cfg.block_k,
        HAS_BIAS=bias is not None,
        num_warps=cfg.num_warps,
        **pdl_launch(x),
    )
    return out


# q/k/v-like projections (N > K) at one token: alone cuBLAS is as fast (10.0 vs 10.6 us), but with
# programmatic dependent launch dense_gemv reads its weights while the kernel before it finishes: the
# graphed batch-1 step takes 1.926 vs 1.951 ms on an H200
WIDE_ON_GEMV = True
WIDE_CONFIG = DenseGemvConfig(block_n=4, block_k=512, num_warps=2)  # the q/k/v tile of the H200 sweep


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, through dense_gemv for one token on CUDA where cuBLAS would split K (N <= K: the o
    projection and the router; 9.0 vs 11.9 us for the o projection on an H200,
    and the q/k/v projection (N > K) with its own tile, see WIDE_ON_GEMV)."""
    if x.is_cuda and x.dim() == 2 and x.shape[0] == 1 and weight.stride(1) == 1:
        if weight.shape[0] <= weight.shape[1]:
            return dense_gemv(x.contiguous(), weight, bias)
        if WIDE_ON_GEMV:
            return dense_gemv(x.contiguous(), weight, bias, WIDE_CONFIG)
    return torch.nn.functional.linear(x, weight, bias)
