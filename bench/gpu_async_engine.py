"""The async engine (what the server drives) without HTTP: N concurrent streams, the offline bench's shape.

    python bench/gpu_async_engine.py --model gpt-oss-20b --streams 64 --prompt-len 1024 --output-len 256

Splits the server's overhead over the offline engine into the async layer (step loop on the event loop,
runner in a worker thread, per-request queues) and the harmony detokenizer (`--tokenizer harmony`,
as the server detokenizes) versus no text (`--tokenizer ids`, as `tkr-embed bench`). Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

from tkr_embed.bench_cli import TokenIdTokenizer, percentiles


async def run_streams(engine, prompts: list[list[int]], output_len: int, tag: str) -> dict:
    from tkr_embed import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    start = time.perf_counter()
    token_times: list[list[float]] = [[] for _ in prompts]

    async def one(index: int, prompt: list[int]) -> None:
        async for output in engine.generate(f"{tag}-{index}", prompt, params):
            if any(completion.new_token_ids for completion in output.outputs):
                token_times[index].append(time.perf_counter())

    await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    seconds = time.perf_counter() - start
    produced = output_len * len(prompts)
    ttft = [(times[0] - start) * 1e3 for times in token_times if times]
    itl = [(b - a) * 1e3 for times in token_times for a, b in zip(times, times[1:])]
    return {"run": tag, "streams": len(prompts), "seconds": seconds, "output_tok_s": produced / seconds,
            "ttft_ms": percentiles(ttft), "itl_ms": percentiles(itl)}


async def main_async(args: argparse.Namespace) -> list[dict]:
    from tkr_embed.backends.factory import create_runner
    from tkr_embed.engine.async_engine import AsyncEngine
    from tkr_embed.engine.config import EngineConfig
    from tkr_embed.harmony.tokenizer import get_tokenizer

    rng = random.Random(args.seed)
    runner = create_runner(args.model, device="cuda")
    info = runner.info
    rows = []
    for name in args.tokenizers:
        tokenizer = get_tokenizer() if name == "harmony" else TokenIdTokenizer(info.vocab_size, info.eos_token_ids)
        config = EngineConfig(max_num_batched_tokens=args.max_num_batched_tokens, block_size=info.block_size)
        engine = AsyncEngine.from_runner(runner, tokenizer, config)
        await engine.start()

        def prompts() -> list[list[int]]:
            return [[rng.randrange(200_000) for _ in range(args.prompt_len)] for _ in range(args.streams)]

        await run_streams(engine, prompts(), 2, f"warmup-{name}")
        row = await run_streams(engine, prompts(), args.output_len, f"streams-{name}")
        rows.append({"tokenizer": name, **row})
        print(json.dumps(rows[-1]), flush=True)
        await engine.stop_loop()      # the runner is shared by the next engine: no shutdown
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gpt-oss-20b")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=1024)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--max-num-batched-tokens", type=int, default=8192)
    parser.add_argument("--tokenizers", nargs="+", default=["ids", "harmony"], choices=["ids", "harmony"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps({"card": _card(), "runs": asyncio.run(main_async(args))}))
    return 0


def _card() -> str:
    import torch

    return torch.cuda.get_device_name(0)


if __name__ == "__main__":
    sys.exit(main())
