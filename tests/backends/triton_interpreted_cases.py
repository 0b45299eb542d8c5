"""Run by tests/backends/test_triton_interpreted.py in a child process with TRITON_INTERPRET=1.

The CUDA MoE kernels (matrix-vector, expert-major decode, grouped) and the fused RMSNorm that sums
their per-pair results, on small shapes, through Triton's CPU interpreter (integer dequantization:
the PTX path needs a GPU). Prints one JSON object: relative errors against the float32 references.
"""

import json
import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

# Triton 3.6's interpreter multiplies bf16 operands of tl.dot as their raw uint16 storage; widen
# them to float32 first (the kernels' arithmetic is unchanged).
_dot = interpreter.InterpreterBuilder.create_dot


def _widen(handle):
    if handle.dtype.scalar == tl.bfloat16:
        data = interpreter._convert_float(handle.data, tl.bfloat16, tl.float32, None).view(np.float32)
        return interpreter.TensorHandle(data, tl.float32)
    return handle


interpreter.InterpreterBuilder.create_dot = lambda self, a, b, d, *args: _dot(self, _widen(a), _widen(b), d, *args)

from tkr_embed.backends.torch.kernels.fused_ops import add_rms_norm, router_topk  # noqa: E402
from tkr_embed.backends.torch.kernels.mxfp4_moe import (  # noqa: E402
    DecodeTileConfig,
    GemvConfig,
    GroupedTileConfig,
    mxfp4_moe,
    mxfp4_moe_partials,
)
from tkr_embed.backends.torch.kernels.mxfp4_reference import moe_reference  # noqa: E402
from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, relative_error  # noqa: E402

SHAPE = dict(num_experts=8, hidden=128, intermediate=96, top_k=4, device="cpu")
CASES = [
    (2, GemvConfig(block_n_gate_up=16, block_n_down=16, block_g=2)),
    (3, GemvConfig(block_n_gate_up=16, block_n_down=16, block_g=2, f16_products=False)),
    (2, GemvConfig(block_n_gate_up=16, block_n_down=16, block_g=2, down_splits=2)),
    (5, DecodeTileConfig(block_k=64)),
    (9, DecodeTileConfig(block_k=64, swap_ab=True, block_m=32)),
    (40, GroupedTileConfig(block_m=16, block_n=32, block_k=64, num_warps=4)),
    (40, GroupedTileConfig(block_m=64, block_n=32, block_k=64, num_warps=4)),
    (40, GroupedTileConfig(block_m=64, block_n=32, block_k=64, num_warps=4, swap_ab=True)),
]


def main() -> int:
    results = []
    for tokens, cfg in CASES:
        case = make_moe_case(tokens, seed=tokens, **SHAPE)
        ref = moe_reference(case.hidden, case.topk_ids, case.topk_weights, *case.weights).float()
        out = mxfp4_moe(case.hidden, case.topk_ids, case.topk_weights, case.weights, config=cfg)
        results.append(
            {
                "tokens": tokens,
                "kernel": type(cfg).__name__,
                "shape": list(out.shape),
                "error": relative_error(out.float(), ref),
            }
        )
    # the down projection split over K: the same sum as unsplit, up to the bf16 rounding of the partial rows
    case = make_moe_case(2, seed=2, **SHAPE)
    unsplit = mxfp4_moe(
        case.hidden,
        case.topk_ids,
        case.topk_weights,
        case.weights,
        config=GemvConfig(block_n_gate_up=16, block_n_down=16, block_g=2),
    ).float()
    split_parts = mxfp4_moe_partials(
        case.hidden,
        case.topk_ids,
        case.topk_weights,
        case.weights,
        config=GemvConfig(block_n_gate_up=16, block_n_down=16, block_g=2, down_splits=2),
    )
    split_vs_unsplit = {"shape": list(split_parts.shape), "error": relative_error(split_parts.float().sum(1), unsplit)}
    case = make_moe_case(3, seed=7, **SHAPE)
    parts = mxfp4_moe_partials(
        case.hidden, case.topk_ids, case.topk_weights, case.weights, config=DecodeTileConfig(block_k=64)
    )
    gen = torch.Generator().manual_seed(0)
    residual = torch.randn(3, 128, generator=gen).to(torch.bfloat16)
    weight = (1 + 0.1 * torch.randn(128, generator=gen)).to(torch.bfloat16)
    normed16 = torch.empty(3, 128, dtype=torch.float16)
    normed, new_residual = add_rms_norm(parts, residual, weight, 1e-5, out_f16=normed16)
    summed = moe_reference(case.hidden, case.topk_ids, case.topk_weights, *case.weights).float() + residual.float()
    rounded = summed.to(torch.bfloat16).float()
    expected = rounded * torch.rsqrt(rounded.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()
    results.append(
        {
            "kernel": "add_rms_norm(parts)",
            "shape": list(parts.shape),
            "error": max(relative_error(new_residual.float(), summed), relative_error(normed.float(), expected)),
            "fp16_copy_equal": torch.equal(normed16, normed.to(torch.float16)),
        }
    )
    # the router of a decode batch: logits in split shares of the hidden size (3 of 64, 64 and 32 columns here),
    # summed with the bias and rounded to bf16 in the top-k kernel
    x = torch.randn(20, 160, generator=gen).to(torch.bfloat16)
    router_w = torch.randn(8, 160, generator=gen).to(torch.bfloat16)
    router_b = torch.randn(8, generator=gen).to(torch.bfloat16)
    ids, probs = router_topk(x, router_w, router_b, 4)
    logits = (x.double() @ router_w.double().T + router_b.double()).to(torch.bfloat16).double()
    values, _ = torch.topk(logits, 4, dim=-1)
    chosen = logits.gather(-1, ids.long())
    results.append(
        {
            "kernel": "router_topk",
            "distinct": all(len(set(row)) == 4 for row in ids.tolist()),
            "chosen_are_top": torch.equal(chosen, values),
            "weights_error": float((probs.double() - torch.softmax(values, -1)).abs().max()),
        }
    )
    results.append({"kernel": "split_vs_unsplit", **split_vs_unsplit})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
