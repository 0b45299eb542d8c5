"""Run under TRITON_INTERPRET=1 by test_triton_interpreted.py: the prefill MoE (experts dequantized once,
then grouped GEMMs) against the float32 reference, its dequantization against the reference's, and the
residual norm reading its rows sorted by expert."""

from __future__ import annotations

import json
import sys

import torch

from tkr_embed.backends.torch.kernels import mxfp4_moe_prefill
from tkr_embed.backends.torch.kernels.fused_ops import add_rms_norm
from tkr_embed.backends.torch.kernels.mxfp4_reference import dequantize_mxfp4, moe_reference
from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, relative_error


def main() -> int:
    results = []
    case = make_moe_case(40, num_experts=8, hidden=128, intermediate=96, top_k=4, seed=3, device="cpu")
    blocks, scales = case.weights[0], case.weights[1]
    dequantized = mxfp4_moe_prefill.dequantize_experts(blocks, scales)
    expected = torch.stack([dequantize_mxfp4(blocks[e], scales[e], torch.bfloat16) for e in range(blocks.shape[0])])
    results.append(
        {"kernel": "dequantize", "shape": list(dequantized.shape), "equal": bool(torch.equal(dequantized, expected))}
    )
    ref = moe_reference(case.hidden, case.topk_ids, case.topk_weights, *case.weights).float()
    for scratch in (1 << 30, 3 * 96 * 128 * 2 * 2):  # all experts at once; three experts a chunk
        mxfp4_moe_prefill.SCRATCH_BYTES = scratch
        parts = mxfp4_moe_prefill.mxfp4_moe_prefill_partials(
            case.hidden, case.topk_ids, case.topk_weights, case.weights
        )
        results.append(
            {
                "kernel": "prefill",
                "chunked": scratch < 1 << 30,
                "shape": list(parts.shape),
                "error": relative_error(parts.float().sum(1), ref),
            }
        )
    # a batch larger than CHUNK_TOKENS goes through in chunks (bounded working set): the same per-pair results
    mxfp4_moe_prefill.SCRATCH_BYTES = 1 << 30
    whole = mxfp4_moe_prefill.mxfp4_moe_prefill_partials(case.hidden, case.topk_ids, case.topk_weights, case.weights)
    mxfp4_moe_prefill.CHUNK_TOKENS = 16
    chunks = mxfp4_moe_prefill.mxfp4_moe_prefill_partials(case.hidden, case.topk_ids, case.topk_weights, case.weights)
    results.append(
        {
            "kernel": "prefill in chunks of 16",
            "shape": list(chunks.shape),
            "error": relative_error(chunks.float(), whole.float()),
        }
    )
    # the residual norm reads the rows where the GEMM left them (sorted by expert): bit for bit what it computes from
    # the per-pair results written back in pair order, also for rows concatenated from token chunks
    gen = torch.Generator().manual_seed(1)
    residual = torch.randn(40, 128, generator=gen).to(torch.bfloat16)
    weight = (1 + 0.1 * torch.randn(128, generator=gen)).to(torch.bfloat16)
    for chunk_tokens in (1 << 15, 16):
        mxfp4_moe_prefill.CHUNK_TOKENS = chunk_tokens
        rows = mxfp4_moe_prefill.mxfp4_moe_prefill_rows(case.hidden, case.topk_ids, case.topk_weights, case.weights)
        from_rows = add_rms_norm(rows, residual, weight, 1e-5)
        from_parts = add_rms_norm(rows.materialize(), residual, weight, 1e-5)
        results.append(
            {
                "kernel": "add_rms_norm(sorted rows)",
                "chunk_tokens": chunk_tokens,
                "rows": list(rows.rows.shape),
                "parts_equal": torch.equal(rows.materialize(), chunks),
                "equal": all(torch.equal(a, b) for a, b in zip(from_rows, from_parts, strict=False)),
            }
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
