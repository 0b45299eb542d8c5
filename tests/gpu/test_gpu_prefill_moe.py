"""The long-prefill MoE (dequantize expert groups to bf16, then cuBLAS) against the plain-torch reference."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_dequantize_experts_is_exact():
    from tkr_embed.backends.torch.kernels.mxfp4_prefill_moe import dequantize_experts
    from tkr_embed.backends.torch.kernels.mxfp4_reference import dequantize_mxfp4
    from tkr_embed.backends.torch.kernels.random_cases import make_moe_weights

    blocks, scales = make_moe_weights(num_experts=3, seed=5)[:2]
    scales = scales.clone()
    scales[1, 7, 3], scales[2, 100, 89] = 131, 118            # other exponents in a few groups
    out = dequantize_experts(blocks, scales)                   # [3, 5760, 2880] bf16
    assert out.shape == (3, 5760, 2880) and out.dtype == torch.bfloat16
    assert torch.equal(out, dequantize_mxfp4(blocks, scales, torch.bfloat16))


@pytest.mark.parametrize("num_tokens", [256, 1000])
def test_prefill_moe_matches_reference_on_20b_shape(num_tokens):
    from tkr_embed.backends.torch.kernels.mxfp4_moe import mxfp4_moe
    from tkr_embed.backends.torch.kernels.mxfp4_reference import moe_reference
    from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, relative_error

    case = make_moe_case(num_tokens, seed=num_tokens)
    residual = torch.randn(num_tokens, 2880, device="cuda").to(torch.bfloat16)
    out = mxfp4_moe(case.hidden, case.topk_ids, case.topk_weights, *case.weights, residual=residual)
    ref = moe_reference(case.hidden, case.topk_ids, case.topk_weights, *case.weights).float() + residual.float()
    assert out.shape == (num_tokens, 2880) and out.dtype == torch.bfloat16
    assert relative_error(out, ref) < 2e-2
    again = mxfp4_moe(case.hidden, case.topk_ids, case.topk_weights, *case.weights, residual=residual)
    assert torch.equal(out, again)                             # no atomics: the same bits every call
