"""The one-pass mask kernel against the unpacked bool mask the CPU path applies: the same logits, bit for bit."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _bit(index: int) -> int:
    """The int32 word with only bit `index` set (bit 31 is the sign)."""
    return -(2**31) if index == 31 else 1 << index


@pytest.mark.parametrize("vocab", [201088, 1000 + 5])  # the model's vocabulary, and one that ends mid-word
def test_masked_logits_equal_the_unpacked_mask(vocab):
    pytest.importorskip("triton")
    from tkr_embed.backends.torch.kernels.token_mask import masked_logits
    from tkr_embed.backends.torch.sampler import unpack_bitmask

    gen = torch.Generator(device="cuda").manual_seed(5)
    rows, words = 7, -(-vocab // 32)
    graph_output = torch.randn(rows + 2, vocab, generator=gen, device="cuda")
    logits = graph_output[:rows]  # a graph's padded output, its first rows
    before = graph_output.clone()
    packed = torch.randint(-(2**31), 2**31 - 1, (rows, words), generator=gen, device="cuda", dtype=torch.int32)
    packed[1] = -1  # every id allowed
    packed[2] = 0
    packed[2, 3] = _bit(31)  # one id: 3 * 32 + 31, the sign bit
    packed[3] = 0
    packed[3, -1] = _bit((vocab - 1) % 32)  # the last id only
    out = masked_logits(logits, packed)
    expected = logits.masked_fill(~unpack_bitmask(packed, vocab), float("-inf"))
    assert torch.equal(out, expected)
    assert torch.equal(graph_output, before)  # out of place
    assert torch.isfinite(out[1]).all()
    assert torch.isfinite(out[2]).nonzero().flatten().tolist() == [3 * 32 + 31]
    assert torch.isfinite(out[3]).nonzero().flatten().tolist() == [vocab - 1]
