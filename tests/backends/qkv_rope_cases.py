"""Run under TRITON_INTERPRET=1 by test_triton_interpreted.py: the one-token q/k/v projection with RoPE and
the KV write in one kernel (`qkv_rope`) against dense_gemv followed by rope_write_kv."""

from __future__ import annotations

import json
import sys

import torch

from tkr_embed.backends.torch.kernels import qkv_rope
from tkr_embed.backends.torch.kernels.dense_gemv import dense_gemv
from tkr_embed.backends.torch.kernels.fused_ops import rope_write_kv


def main() -> int:
    qkv_rope.BLOCK_K = 64                     # several K blocks and a K tail on this small shape
    gen = torch.Generator().manual_seed(0)
    heads, kv_heads, dim, k = 4, 2, 16, 200
    rows = (heads + 2 * kv_heads) * dim
    results = []
    for bias in (True, False):
        x = torch.randn(1, k, generator=gen).to(torch.bfloat16)
        w = (torch.randn(rows, k, generator=gen) / 8).to(torch.bfloat16)
        b = torch.randn(rows, generator=gen).to(torch.bfloat16) if bias else None
        angle = torch.rand(1, dim // 2, generator=gen) * 6.0
        cos, sin = angle.cos().to(torch.bfloat16), angle.sin().to(torch.bfloat16)
        slot = torch.tensor([37], dtype=torch.int64)
        caches = [torch.zeros(2, 5, 16, kv_heads, dim, dtype=torch.bfloat16) for _ in range(2)]
        fused_q = qkv_rope.qkv_rope_write_kv(x, w, b, cos, sin, caches[0], slot, heads, kv_heads, dim)
        split_q = rope_write_kv(dense_gemv(x, w), b, cos, sin, caches[1], slot, heads, kv_heads, dim)
        fused_kv = caches[0].view(2, 80, kv_heads, dim)
        split_kv = caches[1].view(2, 80, kv_heads, dim)

        def error(a: torch.Tensor, r: torch.Tensor) -> float:
            return ((a.float() - r.float()).norm() / r.float().norm()).item()

        results.append({"bias": bias, "q_shape": list(fused_q.shape), "q_error": error(fused_q, split_q),
                        "k_error": error(fused_kv[0, 37], split_kv[0, 37]), "v_error": error(fused_kv[1, 37], split_kv[1, 37]),
                        "other_slots_zero": bool((fused_kv[:, :37] == 0).all() and (fused_kv[:, 38:] == 0).all()),
                        "k_and_v_differ": error(fused_kv[0, 37], fused_kv[1, 37]) > 0.1})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
