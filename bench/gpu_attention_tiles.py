"""Paged attention kernels of the 20b shape under their tunable tiles; prints one JSON object.

    python bench/gpu_attention_tiles.py [--prompts 8 32] [--prompt-len 1024]

Prefill: one step of N prompts of the given length (the engine's 64-stream waves), a causal layer and a
sliding-window layer, for each `paged_attention.PREFILL_TILE` listed. Decode: 64 sequences of ~1,100 cached
tokens, for each `DECODE_BLOCK_N` and `DECODE_WARPS_STAGES`. Medians of CUDA-graph replays (ms a call).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from gpu_kernels import graph_time_ms

from tkr_embed.backends.torch.kernels import paged_attention
from tkr_embed.backends.torch.kernels.random_cases import make_attention_case

SCALE = 0.125
PREFILL_TILES = [(64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 2), (128, 64, 8, 3), (128, 32, 4, 2), (64, 32, 4, 3)]
DECODE_BLOCKS = [(64, 64), (64, 128), (128, 128), (32, 128)]
DECODE_WARPS_STAGES = [(4, 2), (4, 3), (4, 4), (8, 2), (8, 3), (2, 2), (2, 3)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--prompt-len", type=int, default=1024)
    args = parser.parse_args()
    rows = []
    for prompts in args.prompts:
        case = make_attention_case([args.prompt_len] * prompts, seed=prompts)
        starts = torch.arange(prompts + 1, dtype=torch.int32, device="cuda") * args.prompt_len
        query = torch.randn(prompts * args.prompt_len, 64, 64, device="cuda", dtype=torch.bfloat16)
        for tile in PREFILL_TILES:
            paged_attention.PREFILL_TILE = tile
            for window in (0, 128):
                fn = lambda i, w=window: paged_attention.paged_prefill_attention(  # noqa: E731
                    query, case.kv_cache, starts, case.seq_lens, case.block_tables, case.sinks, w, SCALE,
                    max_query_len=args.prompt_len)
                rows.append({"prefill_prompts": prompts, "tile": list(tile), "window": window,
                             "ms": round(graph_time_ms(fn, 4), 4)})
    lens = [1100 + i for i in range(64)]
    case = make_attention_case(lens, seed=1)
    query = torch.randn(64, 64, 64, device="cuda", dtype=torch.bfloat16)
    for name, values in (("DECODE_BLOCK_N", DECODE_BLOCKS), ("DECODE_WARPS_STAGES", DECODE_WARPS_STAGES)):
        for value in values:                       # one constant varied, the other at its default (listed first)
            setattr(paged_attention, name, value)
            for window in (0, 128):
                fn = lambda i, w=window: paged_attention.paged_decode_attention(  # noqa: E731
                    query, case.kv_cache, case.seq_lens, case.block_tables, case.sinks, w, SCALE)
                rows.append({"decode_seqs": 64, name.lower(): list(value), "window": window,
                             "ms": round(graph_time_ms(fn, 12), 4)})
        setattr(paged_attention, name, values[0])
    print(json.dumps({"card": torch.cuda.get_device_name(0), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
