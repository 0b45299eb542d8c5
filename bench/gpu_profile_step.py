"""Where a decode step of the real runner spends its time on the GPU; prints one JSON object.

    python bench/gpu_profile_step.py --batch 1 64 --context 1024 [--profile]

Random weights of the gpt-oss-20b shape through `TorchModelRunner` (the engine's model code and
kernels). For each batch size: the median time of the captured decode graph (the runner's own
`CudaDecodeGraphs`) and of the eager step, both with `context` tokens already cached per sequence.
With --profile, the eager step's kernels are listed by GPU time (torch.profiler).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def _median_ms(fn, repeats: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def _host_median_ms(fn, repeats: int) -> float:
    """Host time until `fn` returns (the device is idle at each start)."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        begin = time.perf_counter()
        fn()
        times.append((time.perf_counter() - begin) * 1e3)
    torch.cuda.synchronize()
    return sorted(times)[len(times) // 2]


def _profile(fn) -> dict:
    """The kernels of one call of `fn`, by GPU time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    events.sort(key=lambda e: -e.device_time_total)
    total = sum(e.device_time_total for e in events)
    return {"kernels_total_ms": round(total / 1e3, 3), "kernel_launches": sum(e.count for e in events),
            "top_kernels": [{"name": e.key[:90], "count": e.count, "ms": round(e.device_time_total / 1e3, 3)}
                            for e in events[:25]]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--prefill", type=int, nargs="*", default=[], help="also time (and profile) one prefill of N tokens")
    parser.add_argument("--prompts", type=int, default=1, help="the prefill's tokens as this many prompts (one step)")
    args = parser.parse_args()

    from tkr_embed.backends.torch.runner import TorchModelRunner
    from tkr_embed.engine.runner import BatchEntry, ScheduledBatch
    from tkr_embed.engine.sampling_params import SamplingParams
    from tkr_embed.models.gpt_oss.config import GptOssConfig
    from tkr_embed.models.gpt_oss.random_init import build_random_model

    model = build_random_model(GptOssConfig.gpt_oss_20b(), device="cuda")
    block = 16
    per_seq = -(-(args.context + 1) // block)
    max_batch = max(args.batch)
    runner = TorchModelRunner.from_model(model, model_name="gpt-oss-20b", num_kv_blocks=max_batch * per_seq + 8,
                                         cuda_graph_batch_sizes=sorted(set(args.batch)))
    params = SamplingParams(temperature=0.0)
    rows = []
    for batch in args.batch:
        entries = [BatchEntry(i, [1000 + i], args.context, list(range(i * per_seq, (i + 1) * per_seq)), True, params)
                   for i in range(batch)]
        scheduled = ScheduledBatch(entries)
        graphed = _median_ms(lambda: runner.logits(scheduled), args.repeats)
        eager = _median_ms(lambda: runner.logits(scheduled, use_graphs=False), max(5, args.repeats // 5))
        executed = _median_ms(lambda: runner.execute(scheduled), args.repeats)
        row = {"batch": batch, "graphed_ms": round(graphed, 3), "graphed_tok_s": round(batch / graphed * 1e3, 1),
               "execute_ms": round(executed, 3), "eager_ms": round(eager, 3)}
        if runner.decode_graphs is not None and batch in runner.decode_graphs.batch_sizes:
            # the graph alone (inputs already in place), and the host time to fill the inputs and launch it
            graph = runner.decode_graphs._graphs._steps[batch].graph
            row["replay_ms"] = round(_median_ms(graph.replay, args.repeats), 3)
            row["logits_host_ms"] = round(_host_median_ms(lambda: runner.logits(scheduled), args.repeats), 3)
        if args.profile:
            row.update(_profile(lambda: runner.logits(scheduled, use_graphs=False)))
        rows.append(row)
    for length in args.prefill:
        per_prompt = length // args.prompts
        prompt_blocks = -(-per_prompt // block)
        scheduled = ScheduledBatch([
            BatchEntry(i, list(range(1000, 1000 + per_prompt)), 0,
                       list(range(i * prompt_blocks, (i + 1) * prompt_blocks)), True, params)
            for i in range(args.prompts)])
        row = {"prefill": length, "prompts": args.prompts,
               "ms": round(_median_ms(lambda: runner.execute(scheduled), 10), 3)}
        if args.profile:
            row.update(_profile(lambda: runner.execute(scheduled)))
        rows.append(row)
    print(json.dumps({"card": torch.cuda.get_device_name(0), "context": args.context, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
