"""Run under TRITON_INTERPRET=1 by test_triton_interpreted.py: every MoE kernel family given the experts
in 16-row tiles (kernels/expert_layout.py, tiled=True) against the same kernel given checkpoint order."""

from __future__ import annotations

import json
import sys

import torch

from tkr_embed.backends.torch.kernels import mxfp4_moe_prefill
from tkr_embed.backends.torch.kernels.expert_layout import tiled_weights
from tkr_embed.backends.torch.kernels.mxfp4_moe import DecodeTileConfig, GemvConfig, GroupedTileConfig, mxfp4_moe
from tkr_embed.backends.torch.kernels.random_cases import make_moe_case

# K = 128 for both projections: two tile columns a row, so a load that spans columns is exercised
SHAPE = dict(num_experts=8, hidden=128, intermediate=128, top_k=4, device="cpu")
CASES = [
    (2, GemvConfig(block_n_gate_up=16, block_n_down=16, block_g=2)),  # one tile column a loop step
    (3, GemvConfig(block_n_gate_up=16, block_n_down=16, block_g=4, down_splits=2)),  # two columns a step
    (5, DecodeTileConfig(block_k=64)),
    (9, DecodeTileConfig(block_k=128, swap_ab=True, block_m=32)),
    (40, GroupedTileConfig(block_m=16, block_n=32, block_k=128, num_warps=4)),
]


def main() -> int:
    results = []
    for tokens, cfg in CASES:
        case = make_moe_case(tokens, seed=tokens, **SHAPE)
        tiles = tiled_weights(case.weights)
        plain = mxfp4_moe(case.hidden, case.topk_ids, case.topk_weights, case.weights, config=cfg)
        out = mxfp4_moe(case.hidden, case.topk_ids, case.topk_weights, tiles, config=cfg, tiled=True)
        results.append(
            {
                "kernel": type(cfg).__name__,
                "bytes_moved": not torch.equal(tiles[0], case.weights[0]),
                "equal": bool(torch.equal(out, plain)),
            }
        )
    case = make_moe_case(40, seed=3, **SHAPE)
    tiles = tiled_weights(case.weights)
    results.append(
        {
            "kernel": "dequantize",
            "equal": bool(
                torch.equal(
                    mxfp4_moe_prefill.dequantize_experts(tiles[3], tiles[4], tiled=True),
                    mxfp4_moe_prefill.dequantize_experts(*case.weights[3:5]),
                )
            ),
        }
    )
    plain = mxfp4_moe_prefill.mxfp4_moe_prefill_partials(case.hidden, case.topk_ids, case.topk_weights, case.weights)
    out = mxfp4_moe_prefill.mxfp4_moe_prefill_partials(case.hidden, case.topk_ids, case.topk_weights, tiles, tiled=True)
    results.append({"kernel": "prefill", "equal": bool(torch.equal(out, plain))})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
