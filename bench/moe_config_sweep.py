"""One MoE layer of the gpt-oss-20b shape at many token counts, under every kernel and tile configuration worth
trying (CUDA only): which one the dispatch should take at each width.

    python3 bench/moe_config_sweep.py [--tokens 64 128 256 512 1024 2048 4096] > moe_sweep.json

Random MXFP4 experts (32 of them, top-4 routing), stored in 16-row tiles as the model keeps them on CUDA. Each
configuration is checked against the float32 reference (relative error under 2%) and timed as the median of
CUDA-event timings over 50 calls after a warm-up. The weights a layer must read (every expert hit: 310 MiB) give
the bandwidth column. It prints one JSON object and, per width, the configurations fastest first on stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from tkr_embed.backends.torch.kernels import mxfp4_moe  # noqa: E402
from tkr_embed.backends.torch.kernels.expert_layout import tiled_weights  # noqa: E402
from tkr_embed.backends.torch.kernels.mxfp4_moe_grouped import GroupedTileConfig  # noqa: E402
from tkr_embed.backends.torch.kernels.mxfp4_moe_mma import MmaTileConfig  # noqa: E402
from tkr_embed.backends.torch.kernels.mxfp4_moe_prefill import mxfp4_moe_prefill_partials  # noqa: E402
from tkr_embed.backends.torch.kernels.mxfp4_reference import moe_reference  # noqa: E402
from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, make_moe_weights, relative_error  # noqa: E402

MMA = [
    MmaTileConfig(16, 128, 64, 4),
    MmaTileConfig(32, 128, 64, 4),
    MmaTileConfig(32, 64, 64, 4),
    MmaTileConfig(32, 128, 128, 4),
    MmaTileConfig(32, 256, 64, 8),
    MmaTileConfig(32, 128, 64, 8),
    MmaTileConfig(16, 256, 128, 8),
]
GROUPED = [
    GroupedTileConfig(block_m=64, block_n=64, block_k=64, num_warps=4),
    GroupedTileConfig(block_m=64, block_n=128, block_k=64, num_warps=4),
    GroupedTileConfig(block_m=64, block_n=128, block_k=64, num_warps=8),
    GroupedTileConfig(block_m=64, block_n=64, block_k=128, num_warps=4),
    GroupedTileConfig(block_m=64, block_n=64, block_k=64, num_warps=4, num_stages=4),
    GroupedTileConfig(block_m=32, block_n=64, block_k=64, num_warps=4),
    GroupedTileConfig(block_m=32, block_n=128, block_k=64, num_warps=4),
    GroupedTileConfig(block_m=128, block_n=64, block_k=64, num_warps=8),
    GroupedTileConfig(block_m=128, block_n=128, block_k=64, num_warps=8),
    GroupedTileConfig(block_m=64, block_n=64, block_k=64, num_warps=4, swap_ab=True),
]


def configurations(x, ids, probs, weights) -> dict:
    """Each configuration's call on this batch, by name."""
    x16 = x.to(torch.float16)
    found = {"dispatch": lambda: mxfp4_moe.mxfp4_moe_partials(x, ids, probs, weights, allow_mma=True, tiled=True)}
    for cfg in MMA:
        found[f"mma{cfg.block_t}/{cfg.rows_gate_up}/{cfg.rows_down}/w{cfg.num_warps}"] = lambda cfg=cfg: (
            mxfp4_moe.mxfp4_moe_partials(x, ids, probs, weights, config=cfg, tiled=True, hidden_f16=x16)
        )
    for cfg in GROUPED:
        name = f"grouped{cfg.block_m}/{cfg.block_n}/{cfg.block_k}/w{cfg.num_warps}/s{cfg.num_stages}"
        found[name + ("/swap" if cfg.swap_ab else "")] = lambda cfg=cfg: mxfp4_moe.mxfp4_moe_partials(
            x, ids, probs, weights, config=cfg, tiled=True
        )
    if x.shape[0] >= 512:
        found["prefill_dequant"] = lambda: mxfp4_moe_prefill_partials(x, ids, probs, weights, tiled=True)
    return found


def time_ms(fn, reps: int = 50) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048, 4096])
    args = parser.parse_args()
    untiled = make_moe_weights(seed=1)
    weights = tiled_weights(untiled)
    layer_bytes = sum(t.numel() * t.element_size() for t in (*weights.gate_up, *weights.down))
    rows = []
    for tokens in args.tokens:
        case = make_moe_case(tokens, seed=100 + tokens, weights=weights)
        x, ids, probs = case.hidden, case.topk_ids, case.topk_weights
        ref = moe_reference(x, ids, probs, *untiled)
        candidates = configurations(x, ids, probs, weights)
        results = []
        for name, fn in candidates.items():
            try:
                out = fn()
                error = relative_error(out.float().sum(1), ref)
                ms = time_ms(fn)
            except Exception as exc:  # a configuration this shape does not take
                results.append({"config": name, "error": f"{type(exc).__name__}: {exc}"[:200]})
                continue
            results.append(
                {
                    "config": name,
                    "ms": round(ms, 4),
                    "rel_error": round(error, 5),
                    "gb_s": round(layer_bytes / ms / 1e6),
                }
            )
        timed = sorted((r for r in results if "ms" in r), key=lambda r: r["ms"])
        print(f"== {tokens} tokens", file=sys.stderr)
        for r in timed:
            flag = "" if r["rel_error"] < 2e-2 else "  WRONG"
            print(f"  {r['config']:32s} {r['ms']:.4f} ms  {r['gb_s']:5d} GB/s{flag}", file=sys.stderr)
        for r in results:
            if "error" in r:
                print(f"  {r['config']:32s} {r['error']}", file=sys.stderr)
        rows.append({"tokens": tokens, "results": results})
        torch.cuda.empty_cache()
    print(json.dumps({"device": torch.cuda.get_device_name(), "layer_bytes": layer_bytes, "rows": rows}))


if __name__ == "__main__":
    main()
