"""Fused decoder kernels (RMSNorm, residual + norm, RoPE + KV write, router top-k, MXFP4 gemv) vs plain torch."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def fused():
    pytest.importorskip("triton")
    from tkr_embed.backends.torch.kernels import fused_ops

    return fused_ops


def test_rms_norm_and_residual_add_match_the_layer(fused):
    from tkr_embed.models.gpt_oss.layers import RMSNorm

    gen = torch.Generator(device="cuda").manual_seed(3)
    x, res = (torch.randn(5, 2880, generator=gen, device="cuda").to(torch.bfloat16) for _ in range(2))
    bias = torch.randn(2880, generator=gen, device="cuda").to(torch.bfloat16)
    norm = RMSNorm(2880, 1e-5, device="cuda", dtype=torch.bfloat16)
    norm.weight.data.normal_(1.0, 0.1, generator=gen)
    assert _rel(fused.rms_norm(x, norm.weight, 1e-5), norm(x)) < 1e-2
    out, new_res = fused.add_rms_norm(x, res, norm.weight, 1e-5, bias=bias)
    expected_res = (res.float() + x.float() + bias.float())
    assert _rel(new_res, expected_res) < 1e-2
    assert _rel(out, norm(expected_res.to(torch.bfloat16))) < 1e-2


def test_rope_write_kv_rotates_and_writes_the_slots(fused):
    from tkr_embed.backends.torch.attention import write_kv_cache
    from tkr_embed.models.gpt_oss.layers import apply_rotary

    hq, hkv, d, t = 64, 8, 64, 6
    gen = torch.Generator(device="cuda").manual_seed(4)
    qkv = torch.randn(t, (hq + 2 * hkv) * d, generator=gen, device="cuda").to(torch.bfloat16)
    bias = torch.randn((hq + 2 * hkv) * d, generator=gen, device="cuda").to(torch.bfloat16)
    angles = torch.rand(t, d // 2, generator=gen, device="cuda") * 100
    cos, sin = angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)
    cache = torch.randn(2, 10, 16, hkv, d, generator=gen, device="cuda").to(torch.bfloat16)
    expected_cache = cache.clone()
    slots = torch.tensor([17, 3, 150, 80, 81, 0], device="cuda")
    q = fused.rope_write_kv(qkv, bias, cos, sin, cache, slots, hq, hkv, d)
    full = qkv + bias
    ref_q = apply_rotary(full[:, : hq * d].view(t, hq, d), cos, sin)
    ref_k = apply_rotary(full[:, hq * d:(hq + hkv) * d].view(t, hkv, d), cos, sin)
    write_kv_cache(expected_cache, ref_k, full[:, (hq + hkv) * d:].view(t, hkv, d), slots)
    assert _rel(q, ref_q) < 1e-2
    assert _rel(cache, expected_cache) < 1e-2
    untouched = torch.ones(2, 160, dtype=torch.bool, device="cuda")
    untouched[:, slots] = False
    flat, flat_ref = cache.view(2, 160, -1), expected_cache.view(2, 160, -1)
    assert torch.equal(flat[untouched], flat_ref[untouched])


@pytest.mark.parametrize("num_tokens, num_experts", [(1, 32), (40, 32), (64, 128), (128, 32), (200, 32)])
def test_router_topk_picks_the_largest_logits(fused, num_tokens, num_experts):
    """One token (matrix-vector logits), 2-128 (one kernel: logits on the tensor cores, then top-k) and more
    (cuBLAS logits) against float64 logits. Router-sized weights (logits around +-1): the chosen experts
    carry the k largest logits up to one bf16 rounding, and the weights are the softmax over them."""
    gen = torch.Generator(device="cuda").manual_seed(5 + num_tokens)
    x = torch.randn(num_tokens, 2880, generator=gen, device="cuda").to(torch.bfloat16)
    weight = (0.02 * torch.randn(num_experts, 2880, generator=gen, device="cuda")).to(torch.bfloat16)
    bias = (0.1 * torch.randn(num_experts, generator=gen, device="cuda")).to(torch.bfloat16)
    ids, weights = fused.router_topk(x, weight, bias, 4)
    exact = x.double() @ weight.double().T + bias.double()                               # [T, E]
    values, _ = torch.topk(exact, 4, dim=-1)
    chosen = exact.gather(-1, ids.long())                                                # in the kernel's order
    rounding = 2.0 ** (torch.floor(torch.log2(exact.abs().amax(-1, keepdim=True))) - 7)  # a bf16 step at the top
    assert all(len(set(row)) == 4 for row in ids.tolist())                              # 4 distinct experts
    assert (chosen >= values[:, -1:] - rounding).all()                                  # the top 4 ...
    assert (chosen[:, :-1] >= chosen[:, 1:] - rounding).all()                           # ... in descending order
    assert torch.allclose(weights.double(), torch.softmax(chosen, dim=-1), rtol=2e-2, atol=1e-4)


@pytest.mark.parametrize("num_tokens", [1, 3, 40])
def test_moe_partials_sum_with_the_residual_in_the_norm(fused, num_tokens):
    from tkr_embed.backends.torch.kernels.mxfp4_moe import mxfp4_moe_partials
    from tkr_embed.backends.torch.kernels.mxfp4_reference import moe_reference
    from tkr_embed.backends.torch.kernels.random_cases import make_moe_case
    from tkr_embed.models.gpt_oss.layers import RMSNorm

    case = make_moe_case(num_tokens, seed=11 + num_tokens)
    residual = torch.randn(num_tokens, 2880, device="cuda").to(torch.bfloat16)
    parts = mxfp4_moe_partials(case.hidden, case.topk_ids, case.topk_weights, *case.weights)     # [T, k, D]
    assert parts.shape == (num_tokens, 4, 2880)
    norm = RMSNorm(2880, 1e-5, device="cuda", dtype=torch.bfloat16)
    norm.weight.data.normal_(1.0, 0.1)
    out, new_residual = fused.add_rms_norm(parts, residual, norm.weight, 1e-5)
    ref = moe_reference(case.hidden, case.topk_ids, case.topk_weights, *case.weights).float() + residual.float()
    assert _rel(new_residual, ref) < 2e-2
    assert _rel(out, norm(new_residual)) < 1e-2
