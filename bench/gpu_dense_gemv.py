"""Few-token projections of the 20b shape: cuBLAS (F.linear) against `dense_gemv` tiles (one H100/H200 call).

    python bench/gpu_dense_gemv.py [--tokens 1 2 4]

Shapes: q/k/v fused (2,880 -> 5,120), o (4,096 -> 2,880), router (2,880 -> 32, bias). Weights rotate over
6 copies so each call reads from memory, as in a decode step. Every variant is checked against fp32.
Prints one line each, JSON last.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F
from gpu_kernels import graph_time_ms

from tkr_embed.backends.torch.kernels.dense_gemv import DenseGemvConfig, dense_gemv

SHAPES = {"qkv": (5120, 2880, False), "o": (2880, 4096, False), "router": (32, 2880, True)}
COPIES = 6
C = DenseGemvConfig
CONFIGS = [None, C(8, 256, 4), C(16, 512, 4), C(8, 512, 4), C(4, 1024, 4), C(2, 1024, 4), C(4, 512, 2),
           C(4, 2048, 4), C(2, 2048, 4)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    rows = []
    for name, (n, k, has_bias) in SHAPES.items():
        ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5 for _ in range(COPIES)]
        bs = [torch.randn(n, device="cuda", dtype=torch.bfloat16) if has_bias else None for _ in range(COPIES)]
        for tokens in args.tokens:
            xs = [torch.randn(tokens, k, device="cuda", dtype=torch.bfloat16) for _ in range(COPIES)]
            ref = (xs[0].float() @ ws[0].float().T + (bs[0].float() if has_bias else 0))
            variants = [("cublas", None, lambda i: F.linear(xs[i], ws[i], bs[i]))]
            variants += [("dense_gemv", cfg, lambda i, cfg=cfg: dense_gemv(xs[i], ws[i], bs[i], cfg)) for cfg in CONFIGS]
            for label, cfg, fn in variants:
                row = {"shape": name, "tokens": tokens, "variant": label, "config": cfg.__dict__ if cfg else None}
                try:
                    err = ((fn(0).float() - ref).norm() / ref.norm()).item()
                    row["rel_error"] = err
                    if err > 1e-2:
                        row["error"] = "wrong result"
                    else:
                        row["us"] = graph_time_ms(fn, COPIES) * 1e3
                        row["GB_s"] = n * k * 2 / row["us"] / 1e3
                except Exception as exc:   # a tile the compiler rejects is reported, not fatal
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                print(name, tokens, label, row["config"], round(row.get("us", -1), 2), round(row.get("GB_s", 0)),
                      row.get("error", ""), flush=True)
                rows.append(row)
    print(json.dumps({"card": torch.cuda.get_device_name(0), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
