"""Prefill MoE on the 20b shape: grouped Triton kernel vs dequantize-to-bf16 + cuBLAS; one JSON line per size.

    python bench/gpu_moe_prefill.py [--tokens 128 256 512 1024 2048]

Eager timings (the dequant path syncs once per call for its expert counts), median of CUDA-event
timed calls over 6 weight copies, and each path's relative error against the plain-torch reference.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from tkr_embed.backends.torch.kernels.mxfp4_moe import default_tile_config, mxfp4_moe
from tkr_embed.backends.torch.kernels.mxfp4_prefill_moe import mxfp4_moe_prefill
from tkr_embed.backends.torch.kernels.mxfp4_reference import moe_reference
from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, make_moe_weights, relative_error

ROTATIONS = 6


def _median_ms(fn, repeats: int = 12) -> float:
    times = []
    for i in range(repeats + 2):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i % ROTATIONS)
        end.record()
        end.synchronize()
        if i >= 2:
            times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    args = parser.parse_args()
    weights = [make_moe_weights(seed=i) for i in range(ROTATIONS)]
    for tokens in args.tokens:
        cases = [make_moe_case(tokens, seed=i, weights=weights[i]) for i in range(ROTATIONS)]
        cfg = default_tile_config(tokens, 4, 32)
        grouped = lambda i: mxfp4_moe(cases[i].hidden, cases[i].topk_ids, cases[i].topk_weights, *cases[i].weights,
                                      config=cfg)
        dequant = lambda i: mxfp4_moe_prefill(cases[i].hidden, cases[i].topk_ids, cases[i].topk_weights,
                                              *cases[i].weights)
        ref = moe_reference(cases[0].hidden, cases[0].topk_ids, cases[0].topk_weights, *cases[0].weights)
        row = {"tokens": tokens, "grouped_ms": round(_median_ms(grouped), 4), "dequant_ms": round(_median_ms(dequant), 4),
               "grouped_err": round(relative_error(grouped(0), ref), 5), "dequant_err": round(relative_error(dequant(0), ref), 5),
               "card": torch.cuda.get_device_name()}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
