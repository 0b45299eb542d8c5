"""The one-pass mask kernel under Triton's interpreter (run by test_triton_interpreted.py with TRITON_INTERPRET=1):
prints, per vocabulary size, whether its output equals the unpacked bool mask's."""

from __future__ import annotations

import json

import torch

from tkr_embed.backends.torch.kernels.token_mask import masked_logits
from tkr_embed.backends.torch.sampler import unpack_bitmask


def _bit(index: int) -> int:
    """The int32 word with only bit `index` set (bit 31 is the sign)."""
    return -(2**31) if index == 31 else 1 << index


def main() -> None:
    gen = torch.Generator().manual_seed(5)
    results = []
    for vocab in (4096 + 64, 1000 + 5):  # two programs a row; a vocabulary that ends mid-word
        rows, words = 3, -(-vocab // 32)
        graph_output = torch.randn(rows + 1, vocab, generator=gen)
        logits = graph_output[:rows]
        before = graph_output.clone()
        packed = torch.randint(-(2**31), 2**31 - 1, (rows, words), generator=gen, dtype=torch.int32)
        packed[1] = 0
        packed[1, -1] = _bit((vocab - 1) % 32)  # the last id only
        packed[2] = 0
        packed[2, 3] = _bit(31)  # the sign bit: id 3 * 32 + 31 only
        out = masked_logits(logits, packed)
        expected = logits.masked_fill(~unpack_bitmask(packed, vocab), float("-inf"))
        results.append(
            {
                "vocab": vocab,
                "equal": bool(torch.equal(out, expected)),
                "untouched": bool(torch.equal(graph_output, before)),
                "single": [torch.isfinite(out[r]).nonzero().flatten().tolist() for r in (1, 2)],
            }
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
