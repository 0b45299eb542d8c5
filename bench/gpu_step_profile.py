"""Where a decode step's time goes at 64, 128, 256 and 512 sequences, against the card's ceilings (CUDA only).

    python3 bench/gpu_step_profile.py [--widths 64 128 256 512] [--context 1024] > step_profile.json

It measures the card's ceilings (a device-to-device copy, a bf16 8192^3 matrix product), builds the 20b shape with
random weights, and times one decode step of each width at `--context` tokens a sequence: replayed as a CUDA graph
(the engine's decode path), and eagerly under torch's profiler, whose kernel times it groups by what they do (the
MoE, attention, dense projections, norms and RoPE, the sampler, the rest). For the MoE and attention it gives the
bytes they must read (the experts hit; the KV of every layer's window) and the bandwidth they reached, and for the
MoE its tensor-core rate. It prints one JSON object and a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from tkr_embed.backends.factory import create_runner  # noqa: E402
from tkr_embed.engine.runner import BatchEntry, ScheduledBatch  # noqa: E402
from tkr_embed.engine.sampling_params import SamplingParams  # noqa: E402

GIB = 1 << 30
# kernel name fragments -> what the kernel does (the first match wins)
CATEGORIES = (
    ("moe", ("moe", "expert", "swiglu", "route", "topk_softmax", "align")),
    ("attention", ("attention", "decode_split", "decode_merge", "prefill_kernel", "paged")),
    ("sampler", ("argmax", "sampl", "multinomial", "softmax", "topk", "sort", "cumsum")),
    ("norm_rope", ("rms", "norm", "rope", "rotary")),
    ("dense", ("gemv", "gemm", "matmul", "xmma", "nvjet", "cutlass", "linear")),
)


def category(kernel: str) -> str:
    name = kernel.lower()
    for label, fragments in CATEGORIES:
        if any(fragment in name for fragment in fragments):
            return label
    return "other"


def ceilings(device: torch.device) -> dict[str, float]:
    """Copy bandwidth (bytes read + written) and the bf16 dense matrix-product rate, each the best of ten."""
    src = torch.empty(2 * GIB, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    copy_s = min(_timed(lambda: dst.copy_(src)) for _ in range(10))
    mm_s = min(_timed(lambda: a @ b) for _ in range(10))
    return {"copy_gb_s": 2 * 2 * GIB / copy_s / 1e9, "bf16_tflop_s": 2 * 8192**3 / mm_s / 1e12}


def _timed(fn, repeat: int = 1) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / repeat


def decode_batch(width: int, context: int, block_size: int) -> ScheduledBatch:
    """`width` sequences, each decoding its token at position `context` over its own blocks."""
    blocks_per_seq = -(-(context + 1) // block_size)
    greedy = SamplingParams(max_tokens=1, temperature=0.0)
    return ScheduledBatch(
        [
            BatchEntry(
                seq_id=i,
                token_ids=[1000 + i],
                start_pos=context,
                block_table=list(range(i * blocks_per_seq, (i + 1) * blocks_per_seq)),
                sample=True,
                sampling=greedy,
                prompt_token_ids=tuple(range(context)),
            )
            for i in range(width)
        ]
    )


def bytes_read(config, width: int, context: int) -> dict[str, float]:
    """What a decode step must read at least: the experts its tokens hit (all of a layer's once the batch routes
    to every expert, as random tokens do at these widths), and each layer's KV within its window."""
    expert_values = 3 * config.hidden_size * config.intermediate_size  # gate_up (2I x D) and down (D x I)
    expert_bytes = expert_values * 17 / 32  # 4-bit values and one scale byte per 32
    hit = min(config.num_local_experts, width * config.num_experts_per_tok)
    kv_token = 2 * config.num_key_value_heads * config.head_dim * 2  # bf16 K and V
    window = config.sliding_window
    kv = sum(
        width * (min(context + 1, window) if kind == "sliding_attention" else context + 1) * kv_token
        for kind in config.layer_types
    )
    flops = 2 * width * config.num_experts_per_tok * expert_values * config.num_hidden_layers
    return {"moe_bytes": config.num_hidden_layers * hit * expert_bytes, "kv_bytes": kv, "moe_flops": flops}


def profile(runner, batch: ScheduledBatch, steps: int) -> dict[str, float]:
    """Mean ms a step each category's kernels ran, over `steps` eager steps under the profiler."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    runner.execute(batch)
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            runner.execute(batch)
        torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        device_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if device_us and event.key and not event.key.startswith("cudaGraph"):
            totals[category(event.key)] += device_us / 1e3 / steps
    return dict(totals)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--kv-gib", type=float, default=32.0)  # 512 x 1,040 tokens: 26 GB
    args = parser.parse_args()
    device = torch.device("cuda")
    report: dict = {"card": torch.cuda.get_device_name(device), "context": args.context, "ceilings": ceilings(device)}
    torch.cuda.empty_cache()  # the ceilings' 4 GiB of buffers go back before the KV cache is sized
    widest = max(args.widths)
    began = time.perf_counter()
    options = dict(device="cuda", kv_cache_bytes=int(args.kv_gib * GIB), max_decode_batch=widest)
    graphed = create_runner("gpt-oss-20b", **options)
    report["build_s"] = round(time.perf_counter() - began, 1)
    config, block_size = graphed.config, graphed.info.block_size
    rows = []
    for width in args.widths:
        batch = decode_batch(width, args.context, block_size)
        graphed.execute(batch)
        graph_ms = 1e3 * min(_timed(lambda batch=batch: graphed.execute(batch), repeat=5) for _ in range(3))
        rows.append({"width": width, "graph_step_ms": graph_ms, "graph_tok_s": width / graph_ms * 1e3})
    graphed.decode_graphs = None  # the same runner, eager: the profiler sees each kernel
    for row in rows:
        batch = decode_batch(row["width"], args.context, block_size)
        eager_ms = 1e3 * min(_timed(lambda batch=batch: graphed.execute(batch), repeat=5) for _ in range(3))
        kernels = profile(graphed, batch, args.steps)
        need = bytes_read(config, row["width"], args.context)
        moe_s, attention_s = kernels.get("moe", 0) / 1e3, kernels.get("attention", 0) / 1e3
        row.update(
            eager_step_ms=eager_ms,
            kernel_ms=kernels,
            kernel_total_ms=sum(kernels.values()),
            moe_gb_s=need["moe_bytes"] / moe_s / 1e9 if moe_s else None,
            moe_tflop_s=need["moe_flops"] / moe_s / 1e12 if moe_s else None,
            attention_gb_s=need["kv_bytes"] / attention_s / 1e9 if attention_s else None,
            **{key: value / 1e9 for key, value in need.items()},
        )
    report["rows"] = rows
    print(json.dumps(report, indent=1))
    top = report["ceilings"]
    print(
        f"{report['card']}: copy {top['copy_gb_s']:.0f} GB/s, bf16 {top['bf16_tflop_s']:.0f} TFLOP/s", file=sys.stderr
    )
    for row in rows:
        share = ", ".join(f"{k} {v:.2f}" for k, v in sorted(row["kernel_ms"].items(), key=lambda kv: -kv[1]))
        print(
            f"width {row['width']}: graph {row['graph_step_ms']:.2f} ms ({row['graph_tok_s']:.0f} tok/s), eager "
            f"{row['eager_step_ms']:.2f} ms, kernels {row['kernel_total_ms']:.2f} ms [{share}]; MoE "
            f"{row['moe_gb_s'] or 0:.0f} GB/s {row['moe_tflop_s'] or 0:.0f} TFLOP/s, attention "
            f"{row['attention_gb_s'] or 0:.0f} GB/s",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
