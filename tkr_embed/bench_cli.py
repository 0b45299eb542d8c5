"""`tkr-embed bench`: offline engine benchmark; prints one JSON object.

Three runs through the offline engine (the loop `LLM.generate` runs), greedy, `ignore_eos`, random
prompt token ids: batch-1 decode, N parallel streams, and the prefill of one long prompt (time to its
first token). Each run reports the time to first token, the inter-token gaps and the end-to-end time of
its requests (nearest-rank percentiles, ms), measured where the engine's step hands the tokens out:
the same points the HTTP load generator (`bench/load_generator.py`) measures behind the server.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RunResult:
    name: str
    streams: int
    prompt_tokens: int
    output_tokens: int
    seconds: float
    output_tok_s: float
    ttft_ms: dict[str, float | None] = field(default_factory=dict)
    itl_ms: dict[str, float | None] = field(default_factory=dict)
    e2e_ms: dict[str, float | None] = field(default_factory=dict)
    step_phase_ms: dict[str, float] = field(default_factory=dict)   # engine time a step, by phase (means)


def percentiles(values: list[float], points: tuple[int, ...] = (50, 90, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles (as bench/load_generator.py computes them); None when there are no values."""
    ordered = sorted(values)
    result: dict[str, float | None] = {}
    for point in points:
        rank = max(1, -(-point * len(ordered) // 100))
        result[f"p{point}"] = ordered[rank - 1] if ordered else None
    return result


def _timed_generate(llm, name: str, prompts: list[list[int]], output_len: int) -> RunResult:
    """Submit every prompt at once, step the engine until all finish; time each request's tokens."""
    from tkr_embed import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    engine = llm.engine
    request_ids = [f"bench-{name}-{index}" for index in range(len(prompts))]
    token_times: dict[str, list[float]] = {request_id: [] for request_id in request_ids}
    produced = 0
    steps_before, phases_before = engine.step_times.steps, dict(engine.step_times.seconds)
    start = time.perf_counter()
    for request_id, prompt in zip(request_ids, prompts):
        engine.add_request(request_id, prompt, params)
    end_times: dict[str, float] = {}
    while engine.has_unfinished_requests():
        outputs = engine.step()
        now = time.perf_counter()
        for output in outputs:
            new_tokens = sum(len(completion.new_token_ids) for completion in output.outputs)
            if new_tokens:
                produced += new_tokens
                token_times[output.request_id].append(now)
            if output.finished:
                end_times[output.request_id] = now
    seconds = time.perf_counter() - start
    ttft = [(times[0] - start) * 1e3 for times in token_times.values() if times]
    itl = [(later - earlier) * 1e3 for times in token_times.values() for earlier, later in zip(times, times[1:])]
    e2e = [(end - start) * 1e3 for end in end_times.values()]
    steps = max(1, engine.step_times.steps - steps_before)
    phases = {phase: (total - phases_before[phase]) * 1e3 / steps for phase, total in engine.step_times.seconds.items()}
    return RunResult(name, len(prompts), sum(map(len, prompts)), produced, seconds, produced / seconds,
                     percentiles(ttft), percentiles(itl), percentiles(e2e), phases)


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
        from tkr_embed.backends.device import idle_step_tokens
        from tkr_embed.backends.factory import create_runner
        from tkr_embed.engine.config import EngineConfig
        from tkr_embed.engine.gc_pauses import freeze_loaded_objects

        engine_options: dict = {"lookahead": args.lookahead}
        if args.max_num_batched_tokens is not None:
            engine_options["max_num_batched_tokens"] = args.max_num_batched_tokens
        # as the server: a step without decodes may be larger (4x on CUDA unless given)
        engine_options["max_num_batched_tokens_idle"] = idle_step_tokens(
            args.device, engine_options.get("max_num_batched_tokens", EngineConfig.max_num_batched_tokens),
            args.max_num_batched_tokens_idle)
        # the KV cache leaves room for steps of the budget (and for the idle ones where that costs little cache)
        runner = create_runner(model, device=args.device,
                               max_num_batched_tokens=engine_options.get("max_num_batched_tokens"),
                               max_idle_step_tokens=engine_options["max_num_batched_tokens_idle"])
        info = runner.info
        engine_options["block_size"] = info.block_size
        llm = LLM.from_runner(runner, TokenIdTokenizer(info.vocab_size, info.eos_token_ids), **engine_options)
        vocab = min(info.vocab_size, 200_000)     # stay below the special tokens

        def prompt(length: int) -> list[int]:
            return [rng.randrange(vocab) for _ in range(length)]

        freeze_loaded_objects()          # as the server does after loading
        _timed_generate(llm, "warmup", [prompt(8)], 2)
        if args.warmup_streams:
            # the timed runs' shapes once (new prompts: nothing for the prefix cache), so they compile no
            # kernels, as a server that has served a while: one prompt alone (its prefill), then the streams
            _timed_generate(llm, "warmup_prompt", [prompt(args.prompt_len)], 2)
            _timed_generate(llm, "warmup_streams", [prompt(args.prompt_len) for _ in range(args.streams)], 2)
        runs = [
            _timed_generate(llm, "decode_batch1", [prompt(args.prompt_len)], args.output_len),
            _timed_generate(llm, "parallel_streams", [prompt(args.prompt_len) for _ in range(args.streams)],
                            args.output_len),
            _timed_generate(llm, "long_prompt_ttft", [prompt(args.long_prompt_len)], 1),
        ]
    config = llm.engine.config
    report = {"model": args.model or "demo", "device": args.device,
              "max_num_batched_tokens": config.max_num_batched_tokens,
              "max_num_batched_tokens_idle": config.max_num_batched_tokens_idle,
              "runner": {"device": info.device, "dtype": info.dtype, "num_kv_blocks": info.num_kv_blocks, **info.extra},
              "runs": [asdict(run) for run in runs]}
    if info.device.startswith("cuda"):
        import torch

        report["card"] = torch.cuda.get_device_name(0)
        report["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(report, indent=1))
    return 0
