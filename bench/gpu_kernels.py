"""Micro-benchmarks of the Triton kernels on the gpt-oss-20b shape; prints one JSON object.

    python bench/gpu_kernels.py [--quick]

Bytes are the fewest each call must read or write (MXFP4 experts that are used, KV rows visible to
the queries, activations); bandwidth is compared with a device-to-device copy measured in the same run.
Weights and caches rotate over several copies so repeated calls do not run out of L2.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import triton

from tkr_embed.backends.torch.kernels.mxfp4_moe import MoeConfig, default_config, mxfp4_moe
from tkr_embed.backends.torch.kernels.paged_attention import paged_decode_attention, paged_prefill_attention
from tkr_embed.backends.torch.kernels.random_cases import make_attention_case, make_moe_case, make_moe_weights

HIDDEN = INTERMEDIATE = 2880
NUM_EXPERTS, TOP_K = 32, 4
EXPERT_BYTES = (2 * INTERMEDIATE * HIDDEN + HIDDEN * INTERMEDIATE) * 17 // 32   # 4.25 bits a weight
ROTATIONS = 6


def copy_bandwidth() -> float:
    """Device-to-device copy of 2 GiB, bytes read + written per second."""
    src = torch.randn(2**29, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
    return 2 * src.numel() * 4 / (ms * 1e-3)


def graph_time_ms(fn, repeats: int) -> float:
    """Median time of one fn() call, `repeats` calls captured in one CUDA graph."""
    def body():
        for i in range(repeats):
            fn(i)
    ms = triton.testing.do_bench_cudagraph(body, rep=200, return_mode="median")
    return ms / repeats


_WEIGHT_SETS: list[tuple[torch.Tensor, ...]] = []


def bench_moe(num_tokens: int, config: MoeConfig | None) -> dict:
    if not _WEIGHT_SETS:
        _WEIGHT_SETS.extend(make_moe_weights(seed=i) for i in range(ROTATIONS))
    cases = [make_moe_case(num_tokens, seed=i, weights=_WEIGHT_SETS[i]) for i in range(ROTATIONS)]
    fn = lambda i: mxfp4_moe(cases[i].hidden, cases[i].topk_ids, cases[i].topk_weights, cases[i].weights, config=config)
    ms = graph_time_ms(fn, ROTATIONS)
    active = sum(torch.unique(c.topk_ids).numel() for c in cases) / ROTATIONS
    moved = active * EXPERT_BYTES + num_tokens * HIDDEN * 2 * 2
    flops = 2 * num_tokens * TOP_K * 3 * HIDDEN * INTERMEDIATE
    cfg = config or default_config(num_tokens, TOP_K)
    return {"kernel": "mxfp4_moe", "tokens": num_tokens, "config": cfg.__dict__, "ms": ms,
            "active_experts": active, "bytes": moved, "GB_s": moved / ms / 1e6, "TFLOP_s": flops / ms / 1e9}


def bench_decode_attention(batch: int, context: int, window: int) -> dict:
    cases = [make_attention_case([context] * batch, seed=i) for i in range(ROTATIONS)]
    queries = torch.randn(batch, 64, 64, device="cuda", dtype=torch.bfloat16)
    fn = lambda i: paged_decode_attention(queries, cases[i].kv_cache, cases[i].seq_lens, cases[i].block_tables,
                                          cases[i].sinks, window, 0.125)
    ms = graph_time_ms(fn, ROTATIONS)
    visible = min(context, window) if window else context
    moved = batch * visible * 8 * 64 * 2 * 2 + 2 * batch * 64 * 64 * 2
    return {"kernel": "decode_attention", "batch": batch, "context": context, "window": window, "ms": ms,
            "bytes": moved, "GB_s": moved / ms / 1e6}


def bench_prefill_attention(length: int, window: int) -> dict:
    case = make_attention_case([length])
    query = torch.randn(length, 64, 64, device="cuda", dtype=torch.bfloat16)
    starts = torch.tensor([0, length], dtype=torch.int32, device="cuda")
    fn = lambda: paged_prefill_attention(query, case.kv_cache, starts, case.seq_lens, case.block_tables,
                                         case.sinks, window, 0.125, max_query_len=length)
    ms = triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
    pairs = sum(min(p + 1, window) if window else p + 1 for p in range(length))
    flops = 4 * pairs * 64 * 64
    return {"kernel": "prefill_attention", "tokens": length, "window": window, "ms": ms, "TFLOP_s": flops / ms / 1e9}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer sizes and no tile sweep")
    args = parser.parse_args()
    torch.manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    results = {"device": props.name, "sms": props.multi_processor_count, "copy_GB_s": copy_bandwidth() / 1e9, "rows": []}
    rows = results["rows"]
    for tokens in ([1, 64] if args.quick else [1, 4, 8, 16, 64, 256, 1024, 4096]):
        rows.append(bench_moe(tokens, None))
    for batch, context in ((1, 1024), (1, 8192), (64, 1024)):
        for window in (0, 128):
            rows.append(bench_decode_attention(batch, context, window))
    for length in (1000, 4096):
        for window in (0, 128):
            rows.append(bench_prefill_attention(length, window))
    print(json.dumps(results, indent=1))
    for row in rows:
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
