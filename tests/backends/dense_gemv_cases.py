"""Run under TRITON_INTERPRET=1 by test_triton_interpreted.py: dense_gemv against float32 matmuls."""

from __future__ import annotations

import json
import sys

import torch

from tkr_embed.backends.torch.kernels.dense_gemv import DenseGemvConfig, dense_gemv


def main() -> int:
    gen = torch.Generator().manual_seed(0)
    results = []
    # (tokens, rows, K, config): a K tail, a row tail, a bias, 1-4 tokens, both default tiles
    for tokens, rows, k, bias, cfg in (
        (1, 40, 300, True, DenseGemvConfig(block_n=16, block_k=128)),
        (3, 37, 256, False, DenseGemvConfig(block_n=8, block_k=64, num_warps=2)),
        (4, 32, 200, True, None),
        (2, 300, 96, False, None),
    ):
        x = torch.randn(tokens, k, generator=gen).to(torch.bfloat16)
        w = torch.randn(rows, k, generator=gen).to(torch.bfloat16)
        b = torch.randn(rows, generator=gen).to(torch.bfloat16) if bias else None
        out = dense_gemv(x, w, b, cfg)
        ref = x.float() @ w.float().T + (b.float() if bias else 0)
        error = ((out.float() - ref).norm() / ref.norm()).item()
        results.append({"tokens": tokens, "rows": rows, "k": k, "shape": list(out.shape), "error": error})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
