"""Run `tkr-embed bench` with the card's free memory cut to what an 80 GB H100 offers.

    python3 bench/gpu_fit_80gb.py [--card-mib 81559] -- --model gpt-oss-120b --device cuda ...

On a larger card (an H200) a ballast allocation takes everything above `--card-mib` (an H100 80GB HBM3
reports 81,559 MiB), so the KV cache sizing, the CUDA graphs and the weights all see an H100's memory.
Prints the ballast and the peak memory allocated besides the ballast on stderr.
"""

from __future__ import annotations

import argparse
import sys

import torch


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--card-mib", type=int, default=81559)
    parser.add_argument("bench_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    total = torch.cuda.get_device_properties(0).total_memory
    ballast_bytes = max(0, total - args.card_mib * 2**20)
    ballast = torch.empty(ballast_bytes, dtype=torch.uint8, device="cuda") if ballast_bytes else None
    torch.cuda.reset_peak_memory_stats()
    print(f"card {total / 2**30:.2f} GiB; ballast {ballast_bytes / 2**30:.2f} GiB; "
          f"free now {torch.cuda.mem_get_info()[0] / 2**30:.2f} GiB", file=sys.stderr)
    from tkr_embed.cli import main as cli_main

    bench_args = [a for a in args.bench_args if a != "--"]
    code = cli_main(["bench", *bench_args])
    peak = torch.cuda.max_memory_allocated() - ballast_bytes
    print(f"peak allocated besides the ballast: {peak / 2**30:.2f} GiB", file=sys.stderr)
    del ballast
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
