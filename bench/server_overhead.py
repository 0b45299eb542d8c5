"""Host-side cost of serving, without a GPU: the engine over a runner that only sleeps for a step.

    python bench/server_overhead.py [--step-ms 13] [--streams 64] [--new 256]

`SleepRunner.execute` spins `--host-ms` in Python (holding the GIL, as building a step's inputs does),
then sleeps `--step-ms` (releasing it, as a CUDA wait does) and returns one token per sequence, so
every millisecond above their sum is Python elsewhere on the host. Two runs
over one shape (64 streams x (1,024 token-id prompt + 256 new), ignore_eos):

- `engine`: the AsyncEngine with 64 consumer tasks, no HTTP;
- `server`: the real app under uvicorn in a child process, loaded by bench/load_generator.py
  (/v1/completions, streamed).

Prints one JSON object: output tok/s and inter-token latency for both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tkr_embed.engine.runner import ModelRunner, RunnerInfo, SampledToken, ScheduledBatch  # noqa: E402

VOCAB_SIZE = 201_088


class SleepRunner(ModelRunner):
    """A step: `host_s` of Python that drops the GIL RELEASES times (as each torch call does), then
    `step_s` of waiting without it; each sequence gets a word-like token."""

    RELEASES = 30

    def __init__(self, step_s: float, host_s: float = 0.0, max_model_len: int = 4096, num_kv_blocks: int = 8192,
                 token_s: float = 0.0) -> None:
        self.step_s = step_s
        self.host_s = host_s
        self.token_s = token_s     # device time per token of the step (prefill chunks cost in proportion)
        self._device_free_at = 0.0
        self._info = RunnerInfo(
            model_name="gpt-oss-20b", max_model_len=max_model_len, vocab_size=VOCAB_SIZE, block_size=16,
            num_kv_blocks=num_kv_blocks, eos_token_ids=(200002, 199999, 200012), device="cpu", dtype="bfloat16",
            quantization="none",
        )

    @property
    def info(self) -> RunnerInfo:
        return self._info

    def execute(self, batch: ScheduledBatch) -> list[SampledToken]:
        return self.launch(batch)()

    def can_follow(self, batch: ScheduledBatch) -> bool:   # as the CUDA runner: decode-only steps chain
        return bool(batch.entries) and all(len(e.token_ids) == 1 and e.sample for e in batch.entries)

    def launch(self, batch: ScheduledBatch, previous=None):
        for _ in range(self.RELEASES):   # input building: Python work between calls that drop the GIL (torch ops)
            end = time.perf_counter() + self.host_s / self.RELEASES
            while time.perf_counter() < end:
                pass
            time.sleep(0)
        tokens = sum(len(e.token_ids) for e in batch.entries)
        # The "device" runs steps in order: from now, or once the step before is done (a lookahead step).
        start = max(time.perf_counter(), self._device_free_at)
        done_at = self._device_free_at = start + self.step_s + self.token_s * tokens

        def finish() -> list[SampledToken]:
            time.sleep(max(0.0, done_at - time.perf_counter()))
            return [SampledToken(e.seq_id, 1000 + (e.seq_id * 7 + e.start_pos) % 5000)
                    for e in batch.entries if e.sample]

        return finish


def _engine(step_s: float, streams: int, host_s: float = 0.0, token_s: float = 0.0):
    from tkr_embed.engine.async_engine import AsyncEngine
    from tkr_embed.engine.config import EngineConfig
    from tkr_embed.harmony.tokenizer import get_tokenizer

    config = EngineConfig(max_num_seqs=streams, max_num_batched_tokens=8192, max_waiting=4 * streams)
    return AsyncEngine.from_runner(SleepRunner(step_s, host_s, token_s=token_s), get_tokenizer(), config)


async def _engine_run(args: argparse.Namespace) -> dict:
    from tkr_embed.engine.sampling_params import SamplingParams

    engine = _engine(args.step_ms / 1e3, args.streams, args.host_ms / 1e3, args.token_us / 1e6)
    itl: list[float] = []
    ttft: list[float] = []

    async def one(index: int) -> int:
        params = SamplingParams(max_tokens=args.new, temperature=0.0, ignore_eos=True)
        last, count, sent = None, 0, time.perf_counter()
        async for out in engine.generate(f"r{index}", [1000 + index] * args.prompt, params):
            now = time.perf_counter()
            if last is not None:
                itl.append(now - last)
            else:
                ttft.append(now - sent)
            last, count = now, out.num_completion_tokens
        return count

    start = time.perf_counter()
    counts = await asyncio.gather(*(one(i) for i in range(args.streams)))
    wall = time.perf_counter() - start
    await engine.shutdown()
    return {"output_tok_s": sum(counts) / wall, "wall_s": wall, "itl_ms_p50": _quantile_ms(itl, 0.5),
            "ttft_ms_p50": _quantile_ms(ttft, 0.5), "ttft_ms_p90": _quantile_ms(ttft, 0.9)}


def _quantile_ms(values: list[float], q: float) -> float | None:
    return sorted(values)[int(len(values) * q)] * 1e3 if values else None


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from tkr_embed.api.server import create_app
    from tkr_embed.config import Settings
    from tkr_embed.harmony.tokenizer import get_tokenizer

    settings = Settings(env="development", security={"auth_enabled": False}, rate_limit={"enabled": False},
                        cache={"enabled": False}, storage={"data_dir": "/tmp/tkr-overhead"},
                        server={"log_level": "warning"})
    app = create_app(settings, _engine(args.step_ms / 1e3, args.streams, args.host_ms / 1e3, args.token_us / 1e6),
                     tokenizer=get_tokenizer(),
                     model_path="gpt-oss-20b")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", http=args.http, loop=args.loop)


def _server_run(args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--port", str(args.port),
                               "--step-ms", str(args.step_ms), "--host-ms", str(args.host_ms), "--streams", str(args.streams),
                               "--token-us", str(args.token_us),
                               "--http", args.http, "--loop", args.loop],
                              env=env)
    try:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{args.port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        load = [sys.executable, str(REPO / "bench/load_generator.py"), "--url", f"http://127.0.0.1:{args.port}",
                "--endpoint", "completions", "--prompt-tokens", str(args.prompt), "--ignore-eos",
                "--concurrency", str(args.streams), "--requests", str(args.streams), "--max-tokens", str(args.new)]
        result = json.loads(subprocess.run(load, env=env, capture_output=True, text=True, check=True).stdout)
        return {"output_tok_s": result["output_tok_s"], "wall_s": result["wall_s"], "itl_ms_p50": result["itl_ms"]["p50"],
                "ttft_ms_p50": result["ttft_ms"]["p50"], "ttft_ms_p90": result["ttft_ms"]["p90"]}
    finally:
        server.terminate()
        server.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--step-ms", type=float, default=13.0)
    parser.add_argument("--host-ms", type=float, default=1.5)
    parser.add_argument("--token-us", type=float, default=0.0,
                        help="device time per token of a step (27 us: a 20b prefill on an H200)")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=1024)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--port", type=int, default=8021)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--http", choices=("auto", "h11", "httptools"), default="auto", help="uvicorn's HTTP protocol")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto", help="uvicorn's event loop")
    parser.add_argument("--only", choices=("engine", "server"), default=None)
    args = parser.parse_args()
    if args.serve:
        _serve(args)
        return 0
    out = {"step_ms": args.step_ms, "host_ms": args.host_ms, "streams": args.streams, "new": args.new}
    if args.only in (None, "engine"):
        out["engine"] = asyncio.run(_engine_run(args))
    if args.only in (None, "server"):
        out["server"] = _server_run(args)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
