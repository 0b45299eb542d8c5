"""Run under TRITON_INTERPRET=1 by test_triton_interpreted.py: the one-program pair alignment against torch's."""

from __future__ import annotations

import json
import sys

import torch

from tkr_embed.backends.torch.kernels.moe_align import align_pairs_to_experts
from tkr_embed.backends.torch.kernels.moe_align_kernel import align_pairs_kernel


def main() -> int:
    gen = torch.Generator().manual_seed(0)
    results = []
    # (tokens, experts, block_m): a decode step of 64 and of 33 sequences, one token, 128 experts,
    # small blocks (many padding rows), and a routing that puts every pair on two experts
    # and batches of several chunks (300 and 1,000 tokens: 1,200 and 4,000 pairs)
    for tokens, experts, block_m, crowded in (
        (64, 32, 64, False),
        (33, 32, 64, False),
        (1, 32, 64, False),
        (17, 128, 64, False),
        (40, 8, 16, False),
        (64, 32, 32, True),
        (300, 32, 64, False),
        (1000, 128, 64, False),
        (300, 32, 16, True),
    ):
        if crowded:
            ids = torch.stack(
                [torch.tensor([0, 1, 2, 3]) if t % 2 else torch.tensor([1, 0, 3, 2]) for t in range(tokens)]
            )
        else:
            ids = torch.stack([torch.randperm(experts, generator=gen)[:4] for _ in range(tokens)])
        ids = ids.to(torch.int32)
        ref = align_pairs_to_experts(ids, experts, block_m, use_kernel=False)
        out = align_pairs_kernel(ids, experts, block_m)
        results.append(
            {
                "tokens": tokens,
                "experts": experts,
                "block_m": block_m,
                "pairs_equal": bool(torch.equal(ref.sorted_pair_ids, out.sorted_pair_ids)),
                "blocks_equal": bool(torch.equal(ref.block_expert, out.block_expert)),
            }
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
