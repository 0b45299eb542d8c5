"""`tkr-embed bench`: offline engine benchmark; prints one JSON object.

Three runs through the public offline API (`LLM.generate`), greedy, random prompt token ids:
batch-1 decode, N parallel streams, and the prefill of one long prompt (time to its first token).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunResult:
    name: str
    streams: int
    prompt_tokens: int
    output_tokens: int
    seconds: float
    output_tok_s: float


def _timed_generate(llm, name: str, prompts: list[list[int]], output_len: int) -> RunResult:
    from tkr_embed import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    start = time.perf_counter()
    results = llm.generate(prompts, params)
    seconds = time.perf_counter() - start
    produced = sum(len(result.token_ids) for result in results)
    return RunResult(name, len(prompts), sum(map(len, prompts)), produced, seconds, produced / seconds)


class TokenIdTokenizer:
    """The tokenizer of a benchmark whose prompts are token ids: decodes every token to no text.

    Keeps the measured loop to the engine's own work (and needs no tokenizer files on the machine).
    """

    def __init__(self, vocab_size: int, eos_token_ids: tuple[int, ...]) -> None:
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids

    def encode(self, text: str) -> list[int]:
        raise ValueError("the benchmark tokenizer takes token ids, not text")

    def decode(self, token_ids) -> str:
        return ""

    def decode_bytes(self, token_ids) -> bytes:
        return b""


def run_bench(args: argparse.Namespace) -> int:
    from tkr_embed import LLM

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            from tkr_embed.models.gpt_oss.demo import write_demo_checkpoint

            model = str(write_demo_checkpoint(Path(scratch), seed=args.seed))
        from tkr_embed.backends.factory import create_runner

        runner = create_runner(model, device=args.device)
        info = runner.info
        llm = LLM.from_runner(runner, TokenIdTokenizer(info.vocab_size, info.eos_token_ids), block_size=info.block_size)
        vocab = min(info.vocab_size, 200_000)     # stay below the special tokens

        def prompt(length: int) -> list[int]:
            return [rng.randrange(vocab) for _ in range(length)]

        _timed_generate(llm, "warmup", [prompt(8)], 2)
        runs = [
            _timed_generate(llm, "decode_batch1", [prompt(args.prompt_len)], args.output_len),
            _timed_generate(llm, "parallel_streams", [prompt(args.prompt_len) for _ in range(args.streams)],
                            args.output_len),
            _timed_generate(llm, "long_prompt_ttft", [prompt(args.long_prompt_len)], 1),
        ]
    report = {"model": args.model or "demo", "device": args.device, "runner": {"device": info.device,
              "dtype": info.dtype, "num_kv_blocks": info.num_kv_blocks, **info.extra},
              "runs": [asdict(run) for run in runs]}
    if info.device.startswith("cuda"):
        import torch

        report["card"] = torch.cuda.get_device_name(0)
        report["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(report, indent=1))
    return 0
