"""`tkr-embed bench`: offline engine benchmark; prints one JSON object.

Runs through the engine the server builds (`tkr_embed.builder`) and the step loop the server runs
(`engine/step_loop.py`, as `LLM.generate` runs it), greedy, `ignore_eos`, random
prompt token ids: batch-1 decode, N parallel streams (once per width given: a concurrency sweep on one
engine, whose max_num_seqs is the largest width or the device's default, whichever is larger), and the prefill of
one long prompt (time to its first token). Each run reports the time to first token, the inter-token gaps and the end-to-end time of
its requests (nearest-rank percentiles, ms), measured where the engine's step hands the tokens out:
the same points the HTTP load generator (`bench/load_generator.py`) measures behind the server. The
report's `sweep` holds one row per width, and `ready_s` the time the engine took to build (weights, KV
cache, CUDA graphs, kernel warm-up).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tkr_embed.engine.args import EngineArgs

if TYPE_CHECKING:
    from tkr_embed.engine.sampling_params import SamplingParams


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
    step_phase_ms: dict[str, float] = field(default_factory=dict)  # engine time a step, by phase (means)
    steps: int = 0  # engine steps the run took
    output_lens: list[int] = field(default_factory=list)  # new tokens of each request, in prompt order


def percentiles(values: list[float], points: tuple[int, ...] = (50, 90, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles (as bench/load_generator.py computes them); None when there are no values."""
    ordered = sorted(values)
    result: dict[str, float | None] = {}
    for point in points:
        rank = max(1, -(-point * len(ordered) // 100))
        result[f"p{point}"] = ordered[rank - 1] if ordered else None
    return result


def _timed_generate(engine, name: str, prompts: list[list[int]], params: int | list[SamplingParams]) -> RunResult:
    """Submit every prompt at once and run the step loop until all finish; time each request's tokens where the
    loop delivers them, as it delivers them to the server's streams. `params`: new tokens of every request
    (greedy, `ignore_eos`), or each request's own sampling parameters."""
    from tkr_embed import SamplingParams
    from tkr_embed.engine.step_loop import AddRequest, run_to_completion

    if isinstance(params, int):
        params = [SamplingParams(temperature=0.0, max_tokens=params, ignore_eos=True)] * len(prompts)
    start = time.perf_counter()
    arrival = time.monotonic()
    requests = [
        AddRequest(f"bench-{name}-{index}", prompt, own, arrival)
        for index, (prompt, own) in enumerate(zip(prompts, params, strict=True))
    ]
    token_times: dict[str, list[float]] = {request.request_id: [] for request in requests}
    lengths: dict[str, int] = dict.fromkeys(token_times, 0)
    end_times: dict[str, float] = {}
    produced = 0
    steps_before, phases_before = engine.step_times.steps, dict(engine.step_times.seconds)

    def record(output) -> None:
        nonlocal produced
        now = time.perf_counter()
        new_tokens = sum(len(completion.new_token_ids) for completion in output.outputs)
        if new_tokens:
            produced += new_tokens
            lengths[output.request_id] += new_tokens
            token_times[output.request_id].append(now)
        if output.finished:
            end_times[output.request_id] = now

    run_to_completion(engine, requests, record)
    seconds = time.perf_counter() - start
    ttft = [(times[0] - start) * 1e3 for times in token_times.values() if times]
    itl = [(later - earlier) * 1e3 for times in token_times.values() for earlier, later in itertools.pairwise(times)]
    e2e = [(end - start) * 1e3 for end in end_times.values()]
    steps = max(1, engine.step_times.steps - steps_before)
    phases = {phase: (total - phases_before[phase]) * 1e3 / steps for phase, total in engine.step_times.seconds.items()}
    return RunResult(
        name,
        len(prompts),
        sum(map(len, prompts)),
        produced,
        seconds,
        produced / seconds,
        percentiles(ttft),
        percentiles(itl),
        percentiles(e2e),
        phases,
        steps,
        list(lengths.values()),
    )


def _structured_pair(engine, prompts: list[list[int]], grammar: str, max_tokens: int) -> list[RunResult]:
    """The prompts answered under a schema's `grammar` as the server holds a chat answer to it (the reasoning free,
    the final answer to the grammar, ending when the JSON is complete), then the same prompts without it, each cut
    to the length its structured answer had: equal work, so the two runs' output tok/s compare the constraint's
    cost alone."""
    from tkr_embed import SamplingParams
    from tkr_embed.harmony.special_tokens import START
    from tkr_embed.harmony.structured_constraint import structured_constraint, with_reasoning_budget
    from tkr_embed.harmony.tokenizer import get_encoding

    encoding = get_encoding()
    constraint = structured_constraint(encoding, final_grammar=grammar, tool_grammars=())
    params = SamplingParams(
        temperature=0.0, max_tokens=max_tokens, constraint=with_reasoning_budget(constraint, max_tokens)
    )
    assistant = [START, *encoding.encode("assistant", disallowed_special=())]  # where a rendered chat prompt ends
    prompts = [prompt + assistant for prompt in prompts]
    # Once untimed, as a server that has served a grammar: a short reasoning budget opens the answer's grammar
    # within a few tokens (the grammar engine's tokenizer is built, the masked sampling compiled).
    short = replace(params, max_tokens=32, constraint=with_reasoning_budget(constraint, 16))
    _timed_generate(engine, "structured_warmup", prompts[:1], [short])
    structured = _timed_generate(engine, "structured", prompts, [params] * len(prompts))
    free = [SamplingParams(temperature=0.0, max_tokens=length, ignore_eos=True) for length in structured.output_lens]
    return [structured, _timed_generate(engine, "structured_free", prompts, free)]


def sweep_row(run: RunResult) -> dict[str, object]:
    """One width of the sweep: output tok/s, wall time, TTFT and ITL percentiles (ms)."""
    return {
        "streams": run.streams,
        "output_tok_s": round(run.output_tok_s, 1),
        "seconds": round(run.seconds, 3),
        "ttft_ms": run.ttft_ms,
        "itl_ms": run.itl_ms,
    }


class TokenIdTokenizer:
    """The tokenizer of a benchmark whose prompts are token ids: decodes every token to no text.

    Keeps the measured loop to the engine's own work (and needs no tokenizer files on the machine). The engine
    reads neither attribute (its vocabulary and end tokens are the runner's).
    """

    def __init__(self, vocab_size: int = 0, eos_token_ids: tuple[int, ...] = ()) -> None:
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids

    def encode(self, text: str) -> list[int]:
        raise ValueError("the benchmark tokenizer takes token ids, not text")

    def decode(self, token_ids) -> str:
        return ""

    def decode_bytes(self, token_ids) -> bytes:
        return b""


def _widest_above_default(args: argparse.Namespace) -> int | None:
    """The widest width when the device's default max_num_seqs would not run it at once, else None (the default)."""
    from tkr_embed.backends.device import default_max_num_seqs

    widest = max(args.streams)
    return widest if widest > default_max_num_seqs(args.device, None) else None


def bench_args(args: argparse.Namespace, model: str) -> EngineArgs:
    """The engine the server would build for `model`, with the step budgets given on the command line."""
    options = {
        "lookahead": args.lookahead,
        "max_num_batched_tokens_idle": args.max_num_batched_tokens_idle,
        "max_num_seqs": args.max_num_seqs or _widest_above_default(args),
    }
    if args.max_num_batched_tokens is not None:
        options["max_num_batched_tokens"] = args.max_num_batched_tokens
    return EngineArgs(model=model, device=args.device, **options)


def _read_schema_grammar(path: str) -> str:
    """The grammar of the --json-schema file's schema, compiled before the engine is built: a schema the grammar
    engine cannot enforce ends the command with its words."""
    from tkr_embed.structured.schema import UnsupportedSchemaError, compile_schema

    try:
        return compile_schema(json.loads(Path(path).read_text())).grammar
    except (OSError, ValueError, UnsupportedSchemaError) as exc:
        raise SystemExit(f"--json-schema {path}: {exc}") from None


def run_bench(args: argparse.Namespace) -> int:
    from tkr_embed import SamplingParams
    from tkr_embed.builder import build_engine

    grammar = _read_schema_grammar(args.json_schema) if args.json_schema is not None else None

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            from tkr_embed.models.gpt_oss.demo import write_demo_checkpoint

            model = str(write_demo_checkpoint(Path(scratch), seed=args.seed))
        engine_args = bench_args(args, model)
        began = time.perf_counter()
        engine = build_engine(engine_args, TokenIdTokenizer())
        engine.cumulative_outputs = False  # the runs read the deltas only, as the server's engine process sends them
        ready_s = time.perf_counter() - began
        info = engine.runner.info
        vocab = min(info.vocab_size, 200_000)  # stay below the special tokens

        def prompt(length: int) -> list[int]:
            return [rng.randrange(vocab) for _ in range(length)]

        _timed_generate(engine, "warmup", [prompt(8)], 2)
        if args.warmup_streams:
            # the timed runs' shapes once (new prompts: nothing for the prefix cache), so they compile no
            # kernels, as a server that has served a while: one prompt alone (its prefill), then the streams
            # of the widest width
            _timed_generate(engine, "warmup_prompt", [prompt(args.prompt_len)], 2)
            widest = [prompt(args.prompt_len) for _ in range(max(args.streams))]
            _timed_generate(engine, "warmup_streams", widest, 2)

        def decode_params(width: int) -> list[SamplingParams]:
            own = SamplingParams(
                temperature=args.temperature,
                top_p=args.top_p,
                repetition_penalty=args.repetition_penalty,
                presence_penalty=args.presence_penalty,
                frequency_penalty=args.frequency_penalty,
                max_tokens=args.output_len,
                ignore_eos=True,
            )
            return [own] * width

        runs = [_timed_generate(engine, "decode_batch1", [prompt(args.prompt_len)], decode_params(1))]
        for width in args.streams:
            prompts = [prompt(args.prompt_len) for _ in range(width)]
            runs.append(_timed_generate(engine, "parallel_streams", prompts, decode_params(width)))
        runs.append(_timed_generate(engine, "long_prompt_ttft", [prompt(args.long_prompt_len)], 1))
        if grammar is not None:
            prompts = [prompt(args.prompt_len) for _ in range(max(args.streams) * args.structured_rounds)]
            runs += _structured_pair(engine, prompts, grammar, args.structured_max_tokens)
    config = engine.config
    report = {
        "model": args.model or "demo",
        "device": args.device,
        "max_num_batched_tokens": config.max_num_batched_tokens,
        "max_num_batched_tokens_idle": config.max_num_batched_tokens_idle,
        "max_num_seqs": config.max_num_seqs,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "penalties": {
            "repetition": args.repetition_penalty,
            "presence": args.presence_penalty,
            "frequency": args.frequency_penalty,
        },
        "ready_s": round(ready_s, 2),
        "runner": {"device": info.device, "dtype": info.dtype, "num_kv_blocks": info.num_kv_blocks, **info.extra},
        "runs": [asdict(run) for run in runs],
        "sweep": [sweep_row(run) for run in runs if run.name == "parallel_streams"],
    }
    named = {run.name: run for run in runs}
    if "structured" in named:  # how much slower the same tokens came under the schema
        report["structured_slowdown"] = round(
            1 - named["structured"].output_tok_s / named["structured_free"].output_tok_s, 4
        )
    if info.device.startswith("cuda"):
        import torch

        report["card"] = torch.cuda.get_device_name(0)
        report["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(report, indent=1))
    return 0
