"""Run under TRITON_INTERPRET=1 by test_triton_interpreted.py: dense_gemv against float32 matmuls."""

from __future__ import annotations

import json
import sys

import torch

from tkr_embed.backends.torch.kernels.dense_gemv import DenseGemvConfig, dense_gemv
from tkr_embed.backends.torch.kernels.fused_ops import _router_topk_small_kernel


def main() -> int:
    gen = torch.Generator().manual_seed(0)
    results = []
    # (tokens, rows, K, config): a K tail, a row tail, a bias, 1-4 tokens, both default tiles
    for tokens, rows, k, bias, cfg in ((1, 40, 300, True, DenseGemvConfig(block_n=16, block_k=128)),
                                       (3, 37, 256, False, DenseGemvConfig(block_n=8, block_k=64, num_warps=2)),
                                       (4, 32, 200, True, None), (2, 300, 96, False, None)):
        x = torch.randn(tokens, k, generator=gen).to(torch.bfloat16)
        w = torch.randn(rows, k, generator=gen).to(torch.bfloat16)
        b = torch.randn(rows, generator=gen).to(torch.bfloat16) if bias else None
        out = dense_gemv(x, w, b, cfg)
        ref = x.float() @ w.float().T + (b.float() if bias else 0)
        error = ((out.float() - ref).norm() / ref.norm()).item()
        results.append({"tokens": tokens, "rows": rows, "k": k, "shape": list(out.shape), "error": error})
    # the one-launch router for a few tokens: 3 tokens, 20 experts (padded to 32), K = 1,500 (a tail)
    x = torch.randn(3, 1500, generator=gen).to(torch.bfloat16)
    w = torch.randn(20, 1500, generator=gen).to(torch.bfloat16)
    b = (30 * torch.randn(20, generator=gen)).to(torch.bfloat16)   # large enough to reorder the experts
    ids = torch.empty(3, 4, dtype=torch.int32)
    weights = torch.empty(3, 4)
    _router_topk_small_kernel[(3,)](x, w, b, ids, weights, 20, x.stride(0), K=1500, TOP_K=4, E_PAD=32, K_PAD=4,
                                    BLOCK_K=1024)
    logits = (x.float() @ w.float().T + b.float()).to(torch.bfloat16).float()
    top = torch.topk(logits, 4, dim=-1)
    chosen = logits.gather(-1, ids.long())
    results.append({"router_ids_match": bool(torch.equal(chosen, top.values)),
                    "router_weights_error": (weights - torch.softmax(chosen, -1)).abs().max().item(),
                    "router_weights_sum_error": (weights.sum(-1) - 1).abs().max().item()})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
