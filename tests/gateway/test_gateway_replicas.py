"""Two server processes (the real `serve()`, uvicorn subprocesses) sharing one redis-server and one
database: request N+1 gets 429 whichever process answers it, and no log line of either process
holds key material."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gateway_support import MASTER_KEY, SECRET_KEY, free_port

LAUNCHER = Path(__file__).parent / "serve_fake_engine.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
LIMIT = 5


@dataclass
class Replica:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start(tmp: Path, name: str, redis_url: str) -> Replica:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENERATION_")}
    env.update({
        "GENERATION_ENV": "production",
        "GENERATION_API_KEY": MASTER_KEY,
        "GENERATION_SECRET_KEY": SECRET_KEY,
        "GENERATION_DATA_DIR": str(tmp / "data"),
        "GENERATION_REDIS_URL": redis_url,
        "GENERATION_RATE_LIMIT_ENABLED": "true",
        "GENERATION_LOG_LEVEL": "info",
        "PYTHONPATH": str(REPO_ROOT),
    })
    log_path = tmp / f"{name}.stderr"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, str(LAUNCHER), str(port)], cwd=tmp, env=env,
                                   stdout=subprocess.DEVNULL, stderr=log)
    return Replica(f"http://127.0.0.1:{port}", process, log_path)


def _wait_healthy(replica: Replica) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(replica.url + "/health", timeout=2).json()["status"] == "healthy":
                return
        except (httpx.HTTPError, ValueError):
            pass
        if replica.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"replica did not start:\n{replica.log_path.read_text()[-3000:]}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[list[Replica]]:
    tmp = tmp_path_factory.mktemp("replicas")
    started = [_start(tmp, "a", redis_url), _start(tmp, "b", redis_url)]
    try:
        for replica in started:
            _wait_healthy(replica)
        yield started
    finally:
        for replica in started:
            replica.stop()


def test_request_n_plus_1_is_refused_across_replicas(replicas: list[Replica]) -> None:
    a, b = replicas
    created = httpx.post(
        a.url + "/admin/api-keys", headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={"name": "shared", "limits": {"requests_per_minute": LIMIT, "burst": 100}},
    )
    assert created.status_code == 201
    key = created.json()["api_key"]
    body = {"prompt": "hi", "max_tokens": 2}
    # Alternate replicas and the three places a key may travel in.
    ways = [{"headers": {"X-API-Key": key}}, {"headers": {"Authorization": f"Bearer {key}"}}, {"params": {"api_key": key}}]
    responses = [
        httpx.post(replicas[i % 2].url + "/v1/completions", json=body, timeout=30, **ways[i % 3]) for i in range(LIMIT)
    ]
    assert [r.status_code for r in responses] == [200] * LIMIT
    assert [r.headers["x-ratelimit-remaining-requests"] for r in responses] == [str(LIMIT - 1 - i) for i in range(LIMIT)]
    for replica in (b, a):
        refused = httpx.post(replica.url + "/v1/completions", json=body, headers={"X-API-Key": key}, timeout=30)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error" and int(refused.headers["retry-after"]) >= 1
    # Every request counts against the key, other routes included (the key created on A, known to B).
    assert httpx.get(b.url + "/v1/models", headers={"X-API-Key": key}).status_code == 429


def test_logs_hold_no_key_material(replicas: list[Replica]) -> None:
    a, b = replicas
    master_headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    key = httpx.post(a.url + "/admin/api-keys", headers=master_headers, json={"name": "logged"}).json()["api_key"]
    traced = httpx.get(b.url + "/v1/models", headers={"X-API-Key": key, "X-Request-ID": "trace-logs-1"})
    assert traced.status_code == 200
    httpx.get(a.url + "/v1/models", params={"api_key": key})
    httpx.get(b.url + "/v1/models", params={"api_key": MASTER_KEY})
    httpx.get(a.url + "/info", headers={"Authorization": f"Bearer {key}"})
    httpx.get(a.url + "/v1/models", headers={"X-API-Key": key + "-typo"})           # a 401 is logged too
    httpx.post(b.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
               json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
    for replica in replicas:
        replica.stop()

    lines = [line for replica in replicas for line in replica.log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]   # every line is one JSON object
    text = "\n".join(lines)
    for secret in (key, key[4:], key[8:-4], MASTER_KEY, SECRET_KEY):
        assert secret not in text
    assert "Bearer tkr" not in text and "api_key=tkr" not in text
    access = [e["message"] for e in entries if e["logger"] == "uvicorn.access"]
    assert any("api_key=[REDACTED]" in message for message in access)
    traced_lines = [e for e in entries if e.get("request_id") == "trace-logs-1"]
    assert any(e["logger"] == "tkr_embed.gateway" and e.get("status") == 200 for e in traced_lines)
    assert any(e["logger"] == "tkr_embed.gateway" and e.get("status") == 401 for e in entries)
