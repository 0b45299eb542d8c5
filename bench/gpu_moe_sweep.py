"""Tile sweep of the MXFP4 MoE kernels on the 20b shape; prints one line per (tokens, config) and JSON last.

    python bench/gpu_moe_sweep.py [--tokens 1 8 16 64 1024]
"""

from __future__ import annotations

import argparse
import json
import sys

from gpu_kernels import bench_moe

from tkr_embed.backends.torch.kernels.mxfp4_moe import MoeTileConfig

GEMV = [MoeTileConfig(0, 16, 256, 4), MoeTileConfig(0, 32, 256, 4), MoeTileConfig(0, 8, 256, 4),
        MoeTileConfig(0, 16, 128, 4), MoeTileConfig(0, 16, 512, 8), MoeTileConfig(0, 32, 128, 2)]
GROUPED = [MoeTileConfig(16, 64, 128, 4), MoeTileConfig(16, 32, 128, 4), MoeTileConfig(16, 64, 64, 4),
           MoeTileConfig(16, 128, 128, 8), MoeTileConfig(32, 64, 128, 4), MoeTileConfig(16, 32, 256, 4)]
PREFILL = [MoeTileConfig(32, 64, 128, 4), MoeTileConfig(64, 64, 64, 4), MoeTileConfig(64, 64, 128, 4),
           MoeTileConfig(128, 64, 64, 8), MoeTileConfig(128, 128, 64, 8), MoeTileConfig(64, 128, 64, 4)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64, 1024])
    args = parser.parse_args()
    rows = []
    for tokens in args.tokens:
        configs = [None] + (GEMV if tokens <= 8 else []) + (GROUPED if 8 <= tokens < 256 else []) + \
            (PREFILL if tokens >= 256 else [])
        for cfg in configs:
            try:
                row = bench_moe(tokens, cfg)
            except Exception as error:          # a config the compiler rejects is reported, not fatal
                row = {"tokens": tokens, "config": cfg.__dict__ if cfg else None, "error": str(error)[:200]}
            rows.append(row)
            tag = "default" if cfg is None else tuple(cfg.__dict__.values())
            print(tokens, tag, round(row.get("ms", -1), 4), round(row.get("GB_s", 0)), flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
