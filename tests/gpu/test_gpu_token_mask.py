"""The one-pass mask kernel against the unpacked bool mask the CPU path applies: the same logits, bit for bit."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("vocab", [201088, 1000 + 5])  # the model's vocabulary, and one that ends mid-word
def test_masked_logits_equal_the_unpacked_mask(vocab):
    pytest.importorskip("triton")
    from tkr_embed.backends.torch.kernels.random_cases import make_mask_case
    from tkr_embed.backends.torch.kernels.token_mask import masked_logits
    from tkr_embed.backends.torch.sampler import unpack_bitmask

    case = make_mask_case(7, vocab)  # a graph's padded output, its first rows
    before = case.graph_output.clone()
    out = masked_logits(case.logits, case.words)
    expected = case.logits.masked_fill(~unpack_bitmask(case.words, vocab), float("-inf"))
    assert torch.equal(out, expected)
    assert torch.equal(case.graph_output, before)  # out of place
    assert torch.isfinite(out[3]).all()  # every id allowed
    for row, token_id in case.single.items():
        assert torch.isfinite(out[row]).nonzero().flatten().tolist() == [token_id]
