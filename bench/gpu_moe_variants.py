"""MXFP4 MoE kernel variants side by side on the 20b shape (one H100/H200 call); prints one line each, JSON last.

    python bench/gpu_moe_variants.py [--tokens 1 8 64 1000 8192]   (from 2,048 tokens: the prefill tiles)

For each token count: the default dispatch (`mxfp4_moe.mxfp4_moe`), then the matrix-vector, expert-major
decode and grouped kernels over a set of tiles, orientations and dequantizations (PTX, integer bit
work, `tl.dot_scaled`). Every timing includes summing the k slots (a torch reduction).
Every variant's result is checked against the float32 reference before it is timed.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from gpu_kernels import EXPERT_BYTES, ROTATIONS, graph_time_ms

from tkr_embed.backends.torch.kernels.mxfp4_moe import GemvConfig, mxfp4_moe
from tkr_embed.backends.torch.kernels.mxfp4_moe_decode import DecodeTileConfig, mxfp4_moe_decode_partials
from tkr_embed.backends.torch.kernels.mxfp4_moe_grouped import GroupedTileConfig, mxfp4_moe_grouped_partials
from tkr_embed.backends.torch.kernels.mxfp4_reference import moe_reference
from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, make_moe_weights, relative_error

D = DecodeTileConfig
G = GroupedTileConfig
V = GemvConfig
GEMV = [V(16, 16, 8, 2), V(16, 16, 8, 2, True, False), V(8, 16, 8, 1), V(16, 16, 8, 1), V(8, 8, 8, 1),
        V(16, 32, 8, 1), V(8, 16, 16, 1), V(16, 16, 16, 2), V(32, 32, 8, 4), V(8, 16, 4, 1), V(16, 32, 8, 2),
        V(16, 16, 8, 2, True, True, 2), V(16, 16, 8, 2, True, True, 3), V(16, 32, 8, 2, True, True, 2)]
DECODE = [D(16, 32, 64, 128, 4, 3, True, False, True), D(16, 32, 64, 128, 4, 3, False, False, True),
          D(16, 16, 32, 128, 4, 3, False, False, True), D(16, 16, 16, 128, 4, 3, False, False, True),
          D(16, 16, 32, 256, 4, 3, False, False, True), D(16, 32, 32, 128, 2, 3, False, False, True),
          D(16, 64, 64, 128, 4, 3, True, False, True), D(16, 32, 64, 64, 4, 3, False, False, True)]
GROUPED = [G(64, 64, 64, 4, 3, False, False, True), G(128, 64, 64, 8, 3, False, False, True),
           G(32, 64, 64, 4, 3, False, False, True), G(64, 128, 64, 4, 3, False, False, True),
           G(64, 64, 64, 4, 4, False, False, True), G(64, 64, 128, 4, 3, False, False, True),
           G(64, 64, 64, 8, 3, False, False, True), G(64, 64, 64, 4, 3, False, False, True, True)]   # last: align kernel
PREFILL = [G(128, 64, 64, 8, 3), G(256, 64, 64, 8, 3), G(128, 128, 64, 8, 3), G(128, 64, 128, 8, 3),
           G(128, 64, 64, 8, 4), G(256, 128, 64, 8, 3), G(128, 128, 64, 8, 4), G(256, 64, 64, 8, 4)]


def time_variant(label, tokens, cfg, fn, cases, refs, weights_bytes) -> dict:
    """Check fn(i) against refs[0..1], then time it (CUDA-graph replays over the rotations); print and return the row."""
    row = {"tokens": tokens, "variant": label, "config": None if cfg is None else cfg.__dict__}
    try:
        errors = [relative_error(fn(i).float(), refs[i]) for i in range(2)]
        row["rel_error"] = max(errors)
        if row["rel_error"] > 2e-2:
            row["error"] = "wrong result"
        else:
            row["ms"] = graph_time_ms(fn, ROTATIONS)
            row["GB_s"] = weights_bytes / row["ms"] / 1e6
    except Exception as error:            # a config the compiler rejects is reported, not fatal
        row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
    print(tokens, label, row["config"], round(row.get("ms", -1), 4), round(row.get("GB_s", 0)),
          row.get("rel_error"), row.get("error", ""), flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64, 128, 256, 1000, 4096])
    args = parser.parse_args()
    weight_sets = [make_moe_weights(seed=i) for i in range(ROTATIONS)]
    rows = []
    for tokens in args.tokens:
        cases = [make_moe_case(tokens, seed=i, weights=weight_sets[i]) for i in range(ROTATIONS)]
        refs = [moe_reference(c.hidden, c.topk_ids, c.topk_weights, *c.weights).float() for c in cases[:2]]
        active = sum(torch.unique(c.topk_ids).numel() for c in cases) / ROTATIONS
        moved = active * EXPERT_BYTES
        rows.append(time_variant("default", tokens, None, lambda i: mxfp4_moe(
            cases[i].hidden, cases[i].topk_ids, cases[i].topk_weights, cases[i].weights), cases, refs, moved))
        if tokens <= 32:
            for cfg in GEMV:
                rows.append(time_variant("gemv", tokens, cfg, lambda i, cfg=cfg: mxfp4_moe(
                    cases[i].hidden, cases[i].topk_ids, cases[i].topk_weights, cases[i].weights, config=cfg),
                    cases, refs, moved))
        if tokens <= 64:
            for cfg in DECODE:
                rows.append(time_variant("decode", tokens, cfg, lambda i, cfg=cfg: mxfp4_moe_decode_partials(
                    cases[i].hidden, cases[i].topk_ids, cases[i].topk_weights, cases[i].weights,
                    config=cfg).sum(1), cases, refs, moved))
        if tokens >= 32:
            for cfg in (GROUPED if tokens < 2048 else PREFILL):
                rows.append(time_variant("grouped", tokens, cfg, lambda i, cfg=cfg: mxfp4_moe_grouped_partials(
                    cases[i].hidden, cases[i].topk_ids, cases[i].topk_weights, cases[i].weights,
                    config=cfg).sum(1), cases, refs, moved))
        del cases
        torch.cuda.empty_cache()
    print(json.dumps({"card": torch.cuda.get_device_name(0), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
