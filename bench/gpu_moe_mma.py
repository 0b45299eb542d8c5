"""The register-operand MMA MoE kernels (`mxfp4_moe_mma`) against the default dispatch, 20b shape; JSON last.

    python bench/gpu_moe_mma.py [--tokens 32 64 128] [--experts 32]

For each token count: the default dispatch, then each MmaTileConfig. Every variant's result is checked
against the float32 reference before it is timed (CUDA-graph replays over rotating weight copies,
including the sum of the k slots).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from gpu_kernels import EXPERT_BYTES, ROTATIONS
from gpu_moe_variants import time_variant

from tkr_embed.backends.torch.kernels.mxfp4_moe import mxfp4_moe
from tkr_embed.backends.torch.kernels.mxfp4_moe_mma import MmaTileConfig, mxfp4_moe_mma_partials
from tkr_embed.backends.torch.kernels.mxfp4_reference import moe_reference
from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, make_moe_weights

M = MmaTileConfig
CONFIGS = [M(16, 128, 64, 4), M(8, 128, 64, 4), M(16, 64, 64, 4), M(8, 64, 64, 4), M(16, 64, 32, 2), M(32, 128, 64, 4),
           M(32, 64, 64, 2), M(16, 64, 64, 2)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[24, 32, 48, 64, 96, 128, 256])
    parser.add_argument("--experts", type=int, default=32)
    args = parser.parse_args()
    weight_sets = [make_moe_weights(num_experts=args.experts, seed=i) for i in range(ROTATIONS)]
    rows = []
    for tokens in args.tokens:
        cases = [make_moe_case(tokens, num_experts=args.experts, seed=i, weights=weight_sets[i]) for i in range(ROTATIONS)]
        refs = [moe_reference(c.hidden, c.topk_ids, c.topk_weights, *c.weights).float() for c in cases[:2]]
        moved = sum(torch.unique(c.topk_ids).numel() for c in cases) / ROTATIONS * EXPERT_BYTES
        variants = [("default", None, lambda i: mxfp4_moe(cases[i].hidden, cases[i].topk_ids, cases[i].topk_weights,
                                                         cases[i].weights))]
        variants += [("mma", cfg, lambda i, cfg=cfg: mxfp4_moe_mma_partials(
            cases[i].hidden, cases[i].topk_ids, cases[i].topk_weights, cases[i].weights, config=cfg).sum(1))
            for cfg in CONFIGS]
        rows += [time_variant(label, tokens, cfg, fn, cases, refs, moved) for label, cfg, fn in variants]
        del cases
        torch.cuda.empty_cache()
    print(json.dumps({"card": torch.cuda.get_device_name(0), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
