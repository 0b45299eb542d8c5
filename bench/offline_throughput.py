"""Offline generation throughput of the engine (tokens/s), printed as one JSON object.

python bench/offline_throughput.py                      # demo checkpoint, CPU
python bench/offline_throughput.py --model DIR --device cuda --num-prompts 256
python bench/offline_throughput.py --model gpt-oss-20b --device cuda   # random weights, real shape
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.llm import LLM


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="checkpoint folder or gpt-oss-20b/120b (default: a fresh demo checkpoint)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--max-num-seqs", type=int, default=32)
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
    parser.add_argument("--num-kv-blocks", type=int, default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: the engine's, engine.cpu_threads)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            from tkr_embed.models.gpt_oss.demo import write_demo_checkpoint

            model = write_demo_checkpoint(Path(scratch) / "demo", seed=0)
        llm = LLM(
            model,
            device=args.device,
            dtype=args.dtype,
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            num_kv_blocks=args.num_kv_blocks,
            cpu_threads=args.threads,
        )
        rng = random.Random(args.seed)
        vocab = llm.engine.vocab_size
        prompts = [
            [rng.randrange(1000, min(vocab, 190000)) for _ in range(args.input_len)] for _ in range(args.num_prompts)
        ]
        params = SamplingParams(max_tokens=args.output_len, temperature=0.0, ignore_eos=True)
        llm.generate(prompts[:2], SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True))  # warm-up
        start = time.perf_counter()
        results = llm.generate(prompts, params)
        elapsed = time.perf_counter() - start
    output_tokens = sum(len(r.token_ids) for r in results)
    info = llm.engine.runner.info
    print(
        json.dumps(
            {
                "model": info.model_name,
                "device": info.device,
                "dtype": info.dtype,
                "quantization": info.quantization,
                "num_prompts": args.num_prompts,
                "input_len": args.input_len,
                "output_len": args.output_len,
                "max_num_seqs": args.max_num_seqs,
                "threads": torch.get_num_threads(),
                "elapsed_s": round(elapsed, 3),
                "output_tokens_per_s": round(output_tokens / elapsed, 1),
                "total_tokens_per_s": round((output_tokens + args.num_prompts * args.input_len) / elapsed, 1),
                "requests_per_s": round(args.num_prompts / elapsed, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
