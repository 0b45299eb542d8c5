"""Server-side latency of response-cache hits vs misses, read from the `Server-Timing` header.

Starts `tkr-embed serve` (the demo checkpoint, auth on, response cache on) in a subprocess unless
`--url` names a running server, creates a generation key, then sends `--requests` distinct
deterministic chat completions (misses, served by the engine) and the same requests again (hits).
Prints one JSON object: p50 / p99 / max of the server's time (`Server-Timing: total;dur=`) and of
the client's round trip, for hits and for misses.

    python bench/cache_hit_latency.py --requests 200
    python bench/cache_hit_latency.py --url http://127.0.0.1:8008 --api-key $GENERATION_API_KEY
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

START_TIMEOUT_S = 300.0
# Rate limits stay in the path (as in production) but never bind during the run.
BENCH_LIMITS = {
    "burst": 1_000_000,
    "requests_per_minute": 1_000_000,
    "requests_per_hour": 1_000_000,
    "requests_per_day": 1_000_000,
}


@dataclass
class Sample:
    server_ms: float
    client_ms: float
    cache: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def _local_server(workdir: Path) -> Iterator[tuple[str, str]]:
    """`tkr-embed serve` on a free port with the demo checkpoint; yields (url, master key)."""
    port = _free_port()
    master_key = secrets.token_urlsafe(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENERATION_")}
    env.update(
        {
            "GENERATION_ENV": "production",
            "GENERATION_API_KEY": master_key,
            "GENERATION_SECRET_KEY": secrets.token_hex(32),
            "GENERATION_DATA_DIR": str(workdir / "data"),
            "GENERATION_CACHE_ENABLED": "true",
            "GENERATION_DEVICE": "cpu",
            "GENERATION_LOG_LEVEL": "warning",
        }
    )
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tkr_embed.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).json().get("status") == "healthy":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url, master_key
    finally:
        process.terminate()
        process.wait(timeout=60)


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]

    return {
        "p50": round(at(0.50), 3),
        "p99": round(at(0.99), 3),
        "max": round(ordered[-1], 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


def _server_ms(response: httpx.Response) -> float:
    timing = response.headers.get("server-timing", "")
    name, _, duration = timing.partition(";dur=")
    if name != "total" or not duration:
        raise RuntimeError(f"no Server-Timing total in the response (got {timing!r})")
    return float(duration)


def _measure(client: httpx.Client, model: str, requests: int, max_tokens: int) -> list[Sample]:
    bodies = [
        {
            "model": model,
            "messages": [{"role": "user", "content": f"cache probe {index}"}],
            "temperature": 0,
            "max_tokens": max_tokens,
        }
        for index in range(requests)
    ]
    samples: list[Sample] = []
    for round_name in ("miss", "hit"):
        for body in bodies:
            started = time.perf_counter()
            response = client.post("/v1/chat/completions", json=body)
            client_ms = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            cache = response.headers.get("x-cache", "none")
            if cache != round_name:
                raise RuntimeError(f"expected a cache {round_name}, the server said {cache!r}")
            samples.append(Sample(_server_ms(response), client_ms, cache))
    return samples


def run(url: str, master_key: str, requests: int, max_tokens: int, warmup: int) -> dict[str, object]:
    admin = {"Authorization": f"Bearer {master_key}"}
    created = httpx.post(
        url + "/admin/api-keys", headers=admin, json={"name": "cache-bench", "limits": BENCH_LIMITS}, timeout=30
    )
    created.raise_for_status()
    headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        model = client.get("/v1/models").json()["data"][0]["id"]
        if warmup:
            for index in range(warmup):  # warm the engine and the connection; distinct prompts, not measured
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": f"warmup {index}"}],
                    "temperature": 0,
                    "max_tokens": max_tokens,
                }
                client.post("/v1/chat/completions", json=body).raise_for_status()
        samples = _measure(client, model, requests, max_tokens)
    result: dict[str, object] = {
        "bench": "cache_hit_latency",
        "url": url,
        "model": model,
        "requests": requests,
        "max_tokens": max_tokens,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}",
    }
    for kind in ("hit", "miss"):
        mine = [s for s in samples if s.cache == kind]
        result[kind] = {
            "server_ms": _percentiles([s.server_ms for s in mine]),
            "client_ms": _percentiles([s.client_ms for s in mine]),
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="a running server (default: start one with the demo model)")
    parser.add_argument("--api-key", default=None, help="its master key (needed with --url)")
    parser.add_argument("--requests", type=int, default=200, help="distinct requests, each sent twice")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    if args.url is not None:
        if not args.api_key:
            parser.error("--url needs --api-key (the master key, to create a bench key)")
        print(json.dumps(run(args.url, args.api_key, args.requests, args.max_tokens, args.warmup)))
        return 0
    with tempfile.TemporaryDirectory() as workdir, _local_server(Path(workdir)) as (url, master_key):
        print(json.dumps(run(url, master_key, args.requests, args.max_tokens, args.warmup)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
