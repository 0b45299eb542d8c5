"""The one-program expert alignment (`moe_align_kernel`) at decode sizes: variants made by editing its source,
each checked against the torch alignment and timed in CUDA graphs. Prints one JSON object.

    python bench/gpu_align_probe.py [--tokens 1 16 64 128]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from gpu_kernels import graph_time_ms
from with_patch import source_variant

from tkr_embed.backends.torch.kernels import moe_align_kernel
from tkr_embed.backends.torch.kernels.moe_align import align_pairs_to_experts

VARIANTS = {
    "as is": [],
    "fixed loop bounds": [("DYNAMIC_BOUNDS = True", "DYNAMIC_BOUNDS = False")],
    "8 warps": [("NUM_WARPS = 4", "NUM_WARPS = 8")],
    "2 warps": [("NUM_WARPS = 4", "NUM_WARPS = 2")],
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 16, 64, 128])
    parser.add_argument("--experts", type=int, default=32)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    rows = []
    modules = {name: source_variant(moe_align_kernel, name, edits) for name, edits in VARIANTS.items()}
    for tokens in args.tokens:
        ids = [torch.stack([torch.randperm(args.experts, generator=gen)[:4] for _ in range(tokens)]).to(torch.int32).cuda()
               for _ in range(4)]
        block_m = 8 if tokens * 4 <= 2 * args.experts else 16
        ref = align_pairs_to_experts(ids[0], args.experts, block_m, use_kernel=False)
        for name, module in modules.items():
            out = module.align_pairs_kernel(ids[0], args.experts, block_m)
            equal = torch.equal(out.sorted_pair_ids, ref.sorted_pair_ids) and torch.equal(out.block_expert, ref.block_expert)
            us = 1000 * graph_time_ms(lambda i, m=module: m.align_pairs_kernel(ids[i], args.experts, block_m), 4)
            rows.append({"tokens": tokens, "variant": name, "us": round(us, 2), "equal": equal})
            print(tokens, name, round(us, 2), equal, flush=True)
    print(json.dumps({"card": torch.cuda.get_device_name(0), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
