"""The server's own cost per token: the HTTP server and its engine process around a runner that computes nothing.

    python bench/host_overhead.py [--streams 256] [--step-ms 14] [--repeat 3] [--processes 1] [--endpoint chat]
    python bench/host_overhead.py --idle-ttft 300 [--prompt-tokens 1000]

The runner answers every step after `--step-ms` (a device's step time; 0: at once) with a text token, so what is
measured is all the host does per token: scheduling, detokenizing, the pipe between the engine process and the
server, SSE, accounting. Each wave sends `--streams` streamed `/v1/completions` requests of `--prompt-tokens` token
ids and `--max-tokens` new tokens (ignore_eos) through `bench/load_generator.py`, all at once; `--endpoint chat`
sends `/v1/chat/completions` requests of `--prompt-words` words instead, which the runner answers as gpt-oss does
(`<|channel|>final<|message|>`, then text), so each token goes through the harmony parser too; with
`--json-schema FILE` every answer is held to the schema, the runner taking ids the masks allow, so the grammar's
masks and matchers cost what they cost on this machine's CPUs. Prints one JSON line
a wave: output tok/s, and the CPU milliseconds per 1,000 tokens of the server process and of the engine process
(from /proc: Linux only). Compare trees on one machine, in turn: the load generator shares its cores.

`--idle-ttft N` instead sends N streamed one-token requests one after another on one keep-alive connection, with
the runner answering at once: the time to the first token is then what the host alone adds to an idle server's
TTFT (parsing, checks, the pipes, SSE). Prints one JSON line with its percentiles in ms, the first 20 requests left
out as warm-up.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from chaos.processes import engine_pid_of  # noqa: E402


def install_null_runner(step_ms: float, harmony: bool = False) -> None:
    """Make the engine builder's `create_runner` return a runner that sleeps `step_ms` a step and computes nothing.
    `harmony`: each sequence's output opens as gpt-oss's final answer does (`<|channel|>final<|message|>`), so a chat
    request streams its text as content."""
    import numpy as np

    from tkr_embed.backends import factory
    from tkr_embed.engine.constraints import resolve_masks
    from tkr_embed.engine.runner import ModelRunner, RunnerInfo, SampledToken
    from tkr_embed.harmony import special_tokens
    from tkr_embed.harmony.tokenizer import get_tokenizer

    header = [special_tokens.CHANNEL, *get_tokenizer().encode("final"), special_tokens.MESSAGE] if harmony else []

    class NullRunner(ModelRunner):
        def __init__(self) -> None:
            self._info = RunnerInfo(
                model_name="gpt-oss-20b",
                max_model_len=8192,
                vocab_size=special_tokens.VOCAB_SIZE,
                block_size=16,
                num_kv_blocks=200_000,
                eos_token_ids=(special_tokens.RETURN,),
                device="cpu",
                dtype="bfloat16",
                quantization="none",
            )
            self._sampled: dict[int, int] = {}  # tokens sampled so far, by sequence

        @property
        def info(self) -> RunnerInfo:
            return self._info

        def execute(self, batch):
            if step_ms:
                time.sleep(step_ms / 1000)
            entries = [e for e in batch.entries if e.sample]
            # a constrained row (a response format) takes an id its mask allows, as a model's sampling would
            words = resolve_masks([e.allowed_tokens for e in entries], special_tokens.VOCAB_SIZE)
            return [
                self._next(e.seq_id, e.start_pos, None if words is None else words[row])
                for row, e in enumerate(entries)
            ]

        def _next(self, seq_id: int, position: int, allowed_words) -> SampledToken:
            sampled = self._sampled.get(seq_id, 0)
            self._sampled[seq_id] = sampled + 1
            # ids 1,000-20,999 are ordinary text tokens
            token = header[sampled] if sampled < len(header) else 1000 + (position * 7919 + seq_id) % 20000
            if allowed_words is not None and not (allowed_words[token >> 5] >> (token & 31)) & 1:
                # an allowed id, cheaply: a word with any set bit, then its lowest set bit
                words = np.flatnonzero(allowed_words)
                word = int(words[((position * 0x9E3779B1) ^ (seq_id * 0x85EBCA77)) % len(words)])
                bits = int(allowed_words[word])
                token = 32 * word + (bits & -bits).bit_length() - 1
            return SampledToken(seq_id, token)

        def release(self, seq_id: int) -> None:
            self._sampled.pop(seq_id, None)

    factory.create_runner = lambda *args, **kwargs: NullRunner()


WARM_UP_REQUESTS = 20


def idle_ttft_ms(port: int, requests: int, prompt_tokens: int) -> list[float]:
    """Each request's time to its first streamed token, one request at a time on one connection (the standard
    library's client: it adds less of its own time than an async one)."""
    rng = random.Random(5)
    times = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(requests):
            body = {
                "model": "gpt-oss-20b",
                "prompt": [rng.randrange(1000, 21000) for _ in range(prompt_tokens)],
                "max_tokens": 1,
                "stream": True,
                "ignore_eos": True,
            }
            payload = json.dumps(body).encode()
            start = time.perf_counter()
            connection.request("POST", "/v1/completions", payload, {"Content-Type": "application/json"})
            response = connection.getresponse()
            if response.status != 200:
                raise SystemExit(f"a request was answered {response.status}: {response.read()[:200]!r}")
            first = None
            received = b""
            while chunk := response.read1(65536):
                received += chunk
                if first is None and b"data: {" in received:
                    first = time.perf_counter()
            if first is None:
                raise SystemExit("a request streamed no token")
            times.append(1000 * (first - start))
    finally:
        connection.close()
    return times


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=256)
    parser.add_argument("--step-ms", type=float, default=14.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument(
        "--endpoint",
        choices=("completions", "chat"),
        default="completions",
        help="chat: /v1/chat/completions with --prompt-words of text, the harmony answer parsed and streamed",
    )
    parser.add_argument("--prompt-words", type=int, default=700, help="a chat prompt's words (about 1,000 tokens)")
    parser.add_argument(
        "--json-schema",
        default=None,
        metavar="FILE",
        help="chat: every answer held to this schema (the runner picks ids its masks allow)",
    )
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--processes", type=int, default=1, help="load-generator processes")
    parser.add_argument("--port", type=int, default=8031)
    parser.add_argument("--idle-ttft", type=int, default=0, metavar="N", help="N sequential requests' TTFT instead")
    args = parser.parse_args(argv)
    url = f"http://127.0.0.1:{args.port}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(BENCH / "null_runner_hook"), str(BENCH), str(ROOT)]),
        "TKR_NULL_RUNNER_STEP_MS": str(0.0 if args.idle_ttft else args.step_ms),
        "TKR_NULL_RUNNER_HARMONY": "1" if args.endpoint == "chat" else "0",
        "GENERATION_MODEL_PATH": "gpt-oss-20b",
        "GENERATION_DEVICE": "cpu",
        "GENERATION_AUTH_ENABLED": "false",
        "GENERATION_RATE_LIMIT_ENABLED": "false",
        "GENERATION_CACHE_ENABLED": "false",
        "GENERATION_DATA_DIR": tempfile.mkdtemp(prefix="tkr-host-overhead-"),
        "GENERATION_LOG_LEVEL": "warning",
        "GENERATION_PORT": str(args.port),
        "GENERATION_ENGINE__MAX_NUM_SEQS": str(args.streams),
        "GENERATION_ENGINE__MAX_WAITING": str(4 * args.streams),
    }
    server = subprocess.Popen([sys.executable, "-m", "tkr_embed.api.server"], env=env, stderr=subprocess.DEVNULL)
    try:
        import httpx

        for _ in range(120):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("the server did not start")
        if args.idle_ttft:
            times = sorted(
                idle_ttft_ms(args.port, WARM_UP_REQUESTS + args.idle_ttft, args.prompt_tokens)[WARM_UP_REQUESTS:]
            )
            pick = {
                f"p{point}": round(times[min(len(times) - 1, len(times) * point // 100)], 3) for point in (50, 90, 99)
            }
            print(json.dumps({"requests": len(times), "prompt_tokens": args.prompt_tokens, "idle_ttft_ms": pick}))
            return 0
        engine = engine_pid_of(server.pid)
        if engine is None:
            raise SystemExit("the server has no engine process")
        load_env = {k: v for k, v in os.environ.items() if k != "TKR_NULL_RUNNER_STEP_MS"}
        if args.endpoint == "chat":
            prompt = ["--endpoint", "chat", "--prompt-words", str(args.prompt_words)]
            if args.json_schema:
                prompt += ["--json-schema", args.json_schema]
        else:
            prompt = ["--endpoint", "completions", "--prompt-tokens", str(args.prompt_tokens), "--ignore-eos"]
        for wave in range(args.repeat):
            before = (_cpu_seconds(server.pid), _cpu_seconds(engine))
            out = subprocess.run(
                [
                    sys.executable,
                    str(BENCH / "load_generator.py"),
                    "--url",
                    url,
                    *prompt,
                    "--concurrency",
                    str(args.streams),
                    "--requests",
                    str(args.streams),
                    "--max-tokens",
                    str(args.max_tokens),
                    "--seed",
                    str(wave + 1),
                    "--processes",
                    str(args.processes),
                ],
                env=load_env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            after = (_cpu_seconds(server.pid), _cpu_seconds(engine))
            load = json.loads(out)
            tokens = load["output_tokens"]
            print(
                json.dumps(
                    {
                        "endpoint": args.endpoint,
                        "streams": args.streams,
                        "step_ms": args.step_ms,
                        "succeeded": load["succeeded"],
                        "output_tok_s": round(load["output_tok_s"], 1),
                        "ttft_p50_ms": load["ttft_ms"]["p50"],  # None: no stream showed any text
                        "server_cpu_ms_per_1k_tokens": round(1e6 * (after[0] - before[0]) / tokens, 1),
                        "engine_cpu_ms_per_1k_tokens": round(1e6 * (after[1] - before[1]) / tokens, 1),
                    }
                ),
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
