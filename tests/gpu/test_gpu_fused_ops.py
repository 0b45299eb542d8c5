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
    out16 = torch.empty(5, 2880, dtype=torch.float16, device="cuda")
    out, new_res = fused.add_rms_norm(x, res, norm.weight, 1e-5, bias=bias, out_f16=out16)
    expected_res = res.float() + x.float() + bias.float()
    assert _rel(new_res, expected_res) < 1e-2
    assert _rel(out, norm(expected_res.to(torch.bfloat16))) < 1e-2
    assert torch.equal(out16, out.to(torch.float16))  # the MMA experts' operand, as converted before


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
    ref_k = apply_rotary(full[:, hq * d : (hq + hkv) * d].view(t, hkv, d), cos, sin)
    write_kv_cache(expected_cache, ref_k, full[:, (hq + hkv) * d :].view(t, hkv, d), slots)
    assert _rel(q, ref_q) < 1e-2
    assert _rel(cache, expected_cache) < 1e-2
    untouched = torch.ones(2, 160, dtype=torch.bool, device="cuda")
    untouched[:, slots] = False
    flat, flat_ref = cache.view(2, 160, -1), expected_cache.view(2, 160, -1)
    assert torch.equal(flat[untouched], flat_ref[untouched])


@pytest.mark.parametrize("num_tokens", [1, 2, 40, 128, 129])
def test_router_topk_picks_the_largest_logits(fused, num_tokens):
    """One token (dense_gemv), decode batches (split shares summed in the top-k kernel) and beyond (cuBLAS): the
    chosen experts carry the k largest logits of the router layer, in descending order, and each weight belongs to
    its own expert. bf16 logits of this size tie often and the order among equal logits is free (the MoE sums the
    slots); a logit summed in another order than cuBLAS's may round to the neighbouring bf16 value."""
    gen = torch.Generator(device="cuda").manual_seed(5)
    x = torch.randn(num_tokens, 2880, generator=gen, device="cuda").to(torch.bfloat16)
    weight = torch.randn(32, 2880, generator=gen, device="cuda").to(torch.bfloat16)
    bias = torch.randn(32, generator=gen, device="cuda").to(torch.bfloat16)
    ids, weights = fused.router_topk(x, weight, bias, 4)
    logits = torch.nn.functional.linear(x, weight, bias).float()  # [T, E], bf16 values
    values, _ = torch.topk(logits, 4, dim=-1)
    assert all(len(set(row)) == 4 for row in ids.tolist())  # 4 distinct experts
    chosen = logits.gather(-1, ids.long())
    if not 2 <= num_tokens <= fused.ROUTER_SPLIT_MAX_TOKENS:
        assert torch.equal(chosen, values)
        assert torch.allclose(weights, torch.softmax(values, dim=-1), atol=1e-5)
    else:
        assert bool(((chosen - values).abs() <= values.abs() * 2.0**-7).all())  # within one bf16 step
        assert torch.allclose(weights, torch.softmax(chosen, dim=-1), atol=0.07)  # a step of 1/4 moves a weight < 1/16
        assert (chosen != values).float().mean() < 0.05


@pytest.mark.parametrize("num_tokens", [1, 3, 40])
def test_moe_partials_sum_with_the_residual_in_the_norm(fused, num_tokens):
    from tkr_embed.backends.torch.kernels.mxfp4_moe import mxfp4_moe_partials
    from tkr_embed.backends.torch.kernels.mxfp4_reference import moe_reference
    from tkr_embed.backends.torch.kernels.random_cases import make_moe_case
    from tkr_embed.models.gpt_oss.layers import RMSNorm

    case = make_moe_case(num_tokens, seed=11 + num_tokens)
    residual = torch.randn(num_tokens, 2880, device="cuda").to(torch.bfloat16)
    parts = mxfp4_moe_partials(case.hidden, case.topk_ids, case.topk_weights, case.weights)  # [T, k, D]
    assert parts.shape == (num_tokens, 4, 2880)
    norm = RMSNorm(2880, 1e-5, device="cuda", dtype=torch.bfloat16)
    norm.weight.data.normal_(1.0, 0.1)
    out, new_residual = fused.add_rms_norm(parts, residual, norm.weight, 1e-5)
    ref = moe_reference(case.hidden, case.topk_ids, case.topk_weights, *case.weights).float() + residual.float()
    assert _rel(new_residual, ref) < 2e-2
    assert _rel(out, norm(new_residual)) < 1e-2
