"""Load generator against a running tkr-embed server (OpenAI-compatible streaming endpoints).

    python bench/load_generator.py --url http://127.0.0.1:8008 --api-key KEY \
        --concurrency 64 --requests 256 --prompt-words 700 --max-tokens 256
    # the offline engine's shape (`tkr-embed bench`): token-id prompts on /v1/completions, no early stop
    python bench/load_generator.py --endpoint completions --prompt-tokens 1024 --ignore-eos \
        --concurrency 64 --requests 64 --max-tokens 256
    # a concurrency sweep: each width in turn, each sending as many requests as its width, all at once
    python bench/load_generator.py --endpoint completions --prompt-tokens 1024 --ignore-eos \
        --concurrency 1 16 64 128 256 --requests-per-stream 1 --max-tokens 256
    # a schema's cost at equal work: the same prompts without it, each cut to the length its schema answer had
    python bench/load_generator.py --concurrency 64 --requests-per-stream 2 --max-tokens 512 \
        --json-schema bench/schemas/order.json > schema.json
    python bench/load_generator.py --concurrency 64 --requests-per-stream 2 --max-tokens 512 \
        --max-tokens-each schema.json > free.json
    # ... the free twin with prompts as long (the schema shown in a system message, no constraint)
    python bench/load_generator.py --concurrency 64 --requests-per-stream 2 --max-tokens 512 \
        --max-tokens-each schema.json --schema-in-prompt bench/schemas/order.json > free_long.json

Prints one JSON object: TTFT, inter-token latency and end-to-end latency percentiles (ms) and the
aggregate output tokens/s, and each request's output tokens in prompt order (`output_tokens_each`); with several widths, the shared settings and `sweep`, one such object per width
(each width's prompts are drawn afresh, so no width reuses another's prefix cache). Each streamed chunk with text counts as one token unless the server
reports usage at the end of the stream (a token that decodes to no text yet, e.g. part of a UTF-8
character, sends no chunk: its gap is folded into the next one).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PLAIN_VOCAB = 200_000  # o200k ids below the harmony special tokens


@dataclass
class RequestTiming:
    start: float
    first_token: float | None = None
    end: float | None = None
    token_times: list[float] = field(default_factory=list)
    output_tokens: int = 0
    error: str | None = None
    index: int = -1  # the prompt's place in the width's prompts


def percentiles(values: list[float], points: tuple[int, ...] = (50, 90, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles; None when there are no values."""
    ordered = sorted(values)
    result: dict[str, float | None] = {}
    for point in points:
        if not ordered:
            result[f"p{point}"] = None
            continue
        rank = max(1, -(-point * len(ordered) // 100))
        result[f"p{point}"] = ordered[rank - 1]
    return result


def summarize(timings: list[RequestTiming], wall_seconds: float) -> dict:
    done = [t for t in timings if t.error is None and t.end is not None]
    ttft = [(t.first_token - t.start) * 1e3 for t in done if t.first_token is not None]
    e2e = [(t.end - t.start) * 1e3 for t in done]
    itl = [(b - a) * 1e3 for t in done for a, b in zip(t.token_times, t.token_times[1:], strict=False)]
    output_tokens = sum(t.output_tokens for t in done)
    return {
        "requests": len(timings),
        "succeeded": len(done),
        "errors": sorted({t.error for t in timings if t.error}),
        "wall_s": wall_seconds,
        "output_tokens": output_tokens,
        "output_tok_s": output_tokens / wall_seconds,
        "ttft_ms": percentiles(ttft),
        "itl_ms": percentiles(itl),
        "e2e_ms": percentiles(e2e),
        "output_tokens_each": [t.output_tokens if t.error is None else None for t in sorted(timings, key=_index)],
    }


def _index(timing: RequestTiming) -> int:
    return timing.index


def request_body(args: argparse.Namespace, prompt: str | list[int], index: int = 0) -> tuple[str, dict]:
    """The route and JSON body of the `index`-th streamed request (greedy unless --temperature)."""
    lengths = args.max_tokens_each
    body = {
        "model": args.model,
        "max_tokens": lengths[index] if lengths and lengths[index] else args.max_tokens,
        "temperature": args.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if args.endpoint == "completions":
        body["prompt"] = prompt
        if args.ignore_eos:
            body["ignore_eos"] = True
        return "/v1/completions", body
    body["messages"] = [{"role": "user", "content": prompt}]
    if args.schema_text is not None:  # the schema as the server shows it (render.response_format_section), unasked
        body["messages"].insert(0, {"role": "system", "content": args.schema_text})
    if args.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "bench", "schema": args.json_schema, "strict": True},
        }
    return "/v1/chat/completions", body


def _has_text(choice: dict) -> bool:
    delta = choice.get("delta", {})
    return bool(choice.get("text") or delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"))


async def _one_request(
    client: httpx.AsyncClient, args: argparse.Namespace, index: int, prompt: str | list[int]
) -> RequestTiming:
    route, body = request_body(args, prompt, index)
    timing = RequestTiming(start=time.perf_counter(), index=index)
    try:
        async with client.stream("POST", route, json=body) as response:
            if response.status_code != 200:
                timing.error = f"HTTP {response.status_code}"
                return timing
            usage_tokens = None
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"].get("completion_tokens")
                for choice in chunk.get("choices", []):
                    if _has_text(choice):
                        now = time.perf_counter()
                        timing.first_token = timing.first_token or now
                        timing.token_times.append(now)
            timing.output_tokens = usage_tokens if usage_tokens is not None else len(timing.token_times)
    except httpx.HTTPError as exc:
        timing.error = type(exc).__name__
    timing.end = time.perf_counter()
    return timing


def make_prompts(args: argparse.Namespace, count: int, seed: int | str) -> list[str | list[int]]:
    rng = random.Random(seed)
    words = ["alpha", "river", "stone", "cloud", "paper", "engine", "orbit", "garden", "signal", "harbor"]
    if args.prompt_tokens:  # random ids below the special tokens, as `tkr-embed bench` draws them
        return [[rng.randrange(PLAIN_VOCAB) for _ in range(args.prompt_tokens)] for _ in range(count)]
    return [" ".join(rng.choice(words) for _ in range(args.prompt_words)) for _ in range(count)]


async def _drive(
    args: argparse.Namespace,
    prompts: list[tuple[int, str | list[int]]],
    concurrency: int,
    start_at: float | None = None,
) -> tuple[list[RequestTiming], float]:
    """Send the (index, prompt) pairs with at most `concurrency` in flight; optionally wait until `start_at` first.

    -> the timings and the moment the first request went out."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=args.timeout, limits=limits) as client:

        async def bounded(index: int, prompt: str | list[int]) -> RequestTiming:
            async with semaphore:
                return await _one_request(client, args, index, prompt)

        # The first request of a fresh client pays its own setup (~15 ms of lazy imports and
        # connection pool set-up in httpx): spend it on /health, outside the timings.
        await client.get("/health")
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        started = time.perf_counter()
        return list(await asyncio.gather(*(bounded(i, p) for i, p in prompts))), started


def _drive_in_process(job: tuple[argparse.Namespace, list[tuple[int, str | list[int]]], int, float]) -> list[dict]:
    args, prompts, concurrency, start_at = job
    timings, _ = asyncio.run(_drive(args, prompts, concurrency, start_at))
    return [dataclasses.asdict(t) for t in timings]


async def run_load(args: argparse.Namespace) -> dict:
    """One width: its report. Several: the shared settings and a `sweep` of one report per width, in turn."""
    widths = args.concurrency
    if len(widths) == 1:
        return {"url": args.url, **_settings(args), **await _run_width(args, widths[0], args.seed)}
    sweep = [await _run_width(args, width, f"{args.seed}-{width}") for width in widths]
    return {"url": args.url, **_settings(args), "sweep": sweep}


def _settings(args: argparse.Namespace) -> dict:
    return {
        "endpoint": args.endpoint,
        "processes": args.processes,
        "prompt_words": None if args.prompt_tokens else args.prompt_words,
        "prompt_tokens": args.prompt_tokens,
        "max_tokens": args.max_tokens,
        "ignore_eos": args.ignore_eos,
        "json_schema": args.json_schema_file,
    }


async def _run_width(args: argparse.Namespace, concurrency: int, seed: int | str) -> dict:
    """Send one width's requests with at most `concurrency` in flight; -> its timings summarized."""
    requests = args.requests_per_stream * concurrency if args.requests_per_stream else args.requests
    prompts = list(enumerate(make_prompts(args, requests, seed)))
    if args.max_tokens_each is not None and len(args.max_tokens_each) != requests:
        raise SystemExit(f"--max-tokens-each gives {len(args.max_tokens_each)} lengths for {requests} requests")
    processes = min(args.processes, concurrency)
    if processes <= 1:
        timings, start = await _drive(args, prompts, concurrency)
        wall = time.perf_counter() - start
    else:
        # One Python process parsing every stream's chunks can become the bottleneck at high concurrency:
        # split the requests and the concurrency over processes that all start at the same instant
        # (perf_counter is the system-wide monotonic clock, so their timestamps compare).
        shares = [prompts[i::processes] for i in range(processes)]
        share_concurrency = max(1, concurrency // processes)
        start = time.perf_counter() + 3.0
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            parts = pool.map(_drive_in_process, [(args, share, share_concurrency, start) for share in shares])
        timings = [RequestTiming(**t) for part in parts for t in part]
        wall = max((t.end for t in timings if t.end is not None), default=start) - start
    return {"started_at": start, "concurrency": concurrency, **summarize(timings, wall)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8008")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--model", default="gpt-oss-20b")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[8], help="requests in flight; several: a sweep, in turn"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="client processes sharing the load (one process parsing 64 streams can be the limit)",
    )
    parser.add_argument("--requests", type=int, default=32, help="requests sent at each width")
    parser.add_argument(
        "--requests-per-stream",
        type=int,
        default=None,
        help="instead of --requests: this many requests per stream of each width (1: the width, all at once)",
    )
    parser.add_argument("--endpoint", choices=("chat", "completions"), default="chat")
    parser.add_argument("--prompt-words", type=int, default=200)
    parser.add_argument(
        "--prompt-tokens",
        type=int,
        default=0,
        help="random token-id prompts of this length instead of words (completions only)",
    )
    parser.add_argument(
        "--ignore-eos", action="store_true", help="ask the server to run every request to max_tokens (completions only)"
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--temperature", type=float, default=0.0, help="every request's temperature (default 0: greedy)"
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json-schema",
        dest="json_schema_file",
        default=None,
        help="a JSON schema file: every request asks for an answer that follows it (chat only)",
    )
    parser.add_argument(
        "--schema-in-prompt",
        dest="schema_in_prompt_file",
        default=None,
        help="a JSON schema file: every request's system message shows it as a response format section, with no "
        "response_format (chat only): prompts as long as --json-schema's, without the constraint",
    )
    parser.add_argument(
        "--max-tokens-each",
        dest="max_tokens_each_file",
        default=None,
        help="a report of this script (one width, same seed and requests): each request's max_tokens becomes the "
        "output length its request had there (a schema's cost at equal work)",
    )
    args = parser.parse_args(argv)
    if (args.prompt_tokens or args.ignore_eos) and args.endpoint != "completions":
        parser.error("--prompt-tokens and --ignore-eos need --endpoint completions")
    if args.json_schema_file is not None and args.endpoint != "chat":
        parser.error("--json-schema needs --endpoint chat")
    args.json_schema = json.loads(Path(args.json_schema_file).read_text()) if args.json_schema_file else None
    args.schema_text = None
    if args.schema_in_prompt_file is not None:
        if args.endpoint != "chat":
            parser.error("--schema-in-prompt needs --endpoint chat")
        shown = json.dumps(json.loads(Path(args.schema_in_prompt_file).read_text()), separators=(",", ":"))
        args.schema_text = f"# Response Formats\n\n## bench\n\n{shown}"
    args.max_tokens_each = None
    if args.max_tokens_each_file:
        args.max_tokens_each = json.loads(Path(args.max_tokens_each_file).read_text())["output_tokens_each"]
    print(json.dumps(asyncio.run(run_load(args)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
