"""Offline engine throughput of the MLX backend beside the torch one, printed as one JSON object.

    python bench/mlx_vs_torch.py                                  # demo checkpoint, CPU torch vs mlx-cpu
    python bench/mlx_vs_torch.py --model DIR --quantizations none q8 q4

The same greedy workload runs through the real engine on each backend; `same_tokens_as_torch` says
whether a backend produced exactly torch's tokens (expected for MLX "none" in float32).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path

import torch

from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.llm import LLM


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint folder (default: a fresh demo checkpoint)")
    parser.add_argument("--torch-device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="the same dtype on both backends")
    parser.add_argument("--quantizations", nargs="+", default=["none"], help="MLX settings to run (none, q8, q4)")
    parser.add_argument("--num-prompts", type=int, default=16)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--num-kv-blocks", type=int, default=256)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: the engine's, engine.cpu_threads)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def run_backend(
    model: Path, device: str, quantization: str, prompts: list[list[int]], args: argparse.Namespace
) -> tuple[dict, list[list[int]]]:
    llm = LLM(
        model,
        device=device,
        dtype=args.dtype,
        quantization=quantization,
        max_num_seqs=args.max_num_seqs,
        num_kv_blocks=args.num_kv_blocks,
        cpu_threads=args.threads,
    )
    params = SamplingParams(max_tokens=args.output_len, temperature=0.0, ignore_eos=True)
    llm.generate(prompts[:2], SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True))  # warm-up
    start = time.perf_counter()
    results = llm.generate(prompts, params)
    elapsed = time.perf_counter() - start
    info = llm.engine.runner.info
    output_tokens = sum(len(r.token_ids) for r in results)
    row = {
        "backend": info.extra.get("backend", "torch"),
        "device": info.device,
        "dtype": info.dtype,
        "quantization": info.quantization,
        "elapsed_s": round(elapsed, 3),
        "output_tokens_per_s": round(output_tokens / elapsed, 1),
        "total_tokens_per_s": round((output_tokens + len(prompts) * args.input_len) / elapsed, 1),
    }
    llm.engine.runner.shutdown()
    return row, [r.token_ids for r in results]


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    prompts = [[rng.randrange(1000, 190000) for _ in range(args.input_len)] for _ in range(args.num_prompts)]
    with tempfile.TemporaryDirectory() as scratch:
        model = Path(args.model) if args.model else None
        if model is None:
            from tkr_embed.models.gpt_oss.demo import write_demo_checkpoint

            model = write_demo_checkpoint(Path(scratch) / "demo", seed=0)
        torch_row, torch_tokens = run_backend(model, args.torch_device, "auto", prompts, args)
        rows = [torch_row]
        for quantization in args.quantizations:
            row, tokens = run_backend(model, "mlx", quantization, prompts, args)
            row["same_tokens_as_torch"] = tokens == torch_tokens
            row["speed_vs_torch"] = round(row["output_tokens_per_s"] / torch_row["output_tokens_per_s"], 2)
            rows.append(row)
    print(
        json.dumps(
            {
                "model": model.name if args.model else "demo",
                "machine": f"{platform.system()} {platform.machine()}",
                "num_prompts": args.num_prompts,
                "input_len": args.input_len,
                "output_len": args.output_len,
                "max_num_seqs": args.max_num_seqs,
                "torch_threads": torch.get_num_threads(),
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
