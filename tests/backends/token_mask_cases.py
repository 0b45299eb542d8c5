"""The one-pass mask kernel under Triton's interpreter (run by test_triton_interpreted.py with TRITON_INTERPRET=1):
prints, per vocabulary size, whether its output equals the unpacked bool mask's."""

from __future__ import annotations

import json

import torch

from tkr_embed.backends.torch.kernels.random_cases import make_mask_case
from tkr_embed.backends.torch.kernels.token_mask import masked_logits
from tkr_embed.backends.torch.sampler import unpack_bitmask


def main() -> None:
    results = []
    for vocab in (4096 + 64, 1000 + 5):  # two programs a row; a vocabulary that ends mid-word
        case = make_mask_case(3, vocab, device="cpu")
        before = case.graph_output.clone()
        out = masked_logits(case.logits, case.words)
        expected = case.logits.masked_fill(~unpack_bitmask(case.words, vocab), float("-inf"))
        results.append(
            {
                "vocab": vocab,
                "equal": bool(torch.equal(out, expected)),
                "untouched": bool(torch.equal(case.graph_output, before)),
                "single": [torch.isfinite(out[r]).nonzero().flatten().tolist() for r in (1, 2)],
            }
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
