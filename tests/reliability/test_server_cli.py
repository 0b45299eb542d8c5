"""`tkr-embed serve` run as `vllm serve` users run it, in its own process on the demo checkpoint, configured by
MODEL and flags alone (no GENERATION_* variable): --api-key is required of every request, the served names are
listed and accepted, each request is logged once, a stats line reports a running load; a taken port stops it at
once, before the model loads, and a model that cannot load stops it with status 3."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))

from server_process import REPO_ROOT, ServerProcess, free_port, server_process  # noqa: E402

KEY = "cli-master-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
EXIT_START_FAILED = 3


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tkr_embed.cli", "serve", *args]


def flags_only_env() -> dict[str, str]:
    """The environment with no GENERATION_* variable: the flags are the whole configuration."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GENERATION_")}
    return {**env, "PYTHONPATH": str(REPO_ROOT)}


def log_entries(server: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def server(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("cli")
    port = free_port()
    command = serve_command(
        str(demo_model_dir),
        "--served-model-name",
        "primary",
        "alias-b",
        "--api-key",
        KEY,
        "--max-model-len",
        "1024",
        "--port",
        str(port),
        "--model.device",
        "cpu",
        "--storage.data-dir",
        str(workdir / "data"),
        "--engine.kv-cache-blocks",
        "512",
        "--server.log-stats-interval-s",
        "1",
        "--server.log-level",
        "info",
    )
    with server_process(workdir, flags_only_env(), port, command) as running:
        running.wait_healthy()
        yield running


def test_every_request_needs_the_api_key(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/health").status_code == 200  # probes need none
    assert httpx.get(server.url + "/v1/models").status_code == 401
    assert httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer not-the-key"}).status_code == 401
    completion = httpx.post(server.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 1})
    assert completion.status_code == 401
    assert httpx.get(server.url + "/v1/models", headers=AUTH).status_code == 200


def test_the_served_names_and_the_context_length_are_the_flags(server: ServerProcess) -> None:
    listed = httpx.get(server.url + "/v1/models", headers=AUTH).json()["data"]
    assert [(card["id"], card["max_model_len"]) for card in listed] == [("primary", 1024), ("alias-b", 1024)]
    answer = httpx.post(
        server.url + "/v1/completions",
        headers=AUTH,
        json={"model": "alias-b", "prompt": "hi", "max_tokens": 2, "temperature": 0},
        timeout=60,
    )
    assert answer.status_code == 200 and answer.json()["model"] == "primary"
    assert httpx.get(server.url + "/info", headers=AUTH).json()["context_length"] == 1024


def test_each_request_is_logged_once(server: ServerProcess) -> None:
    sent = [
        ("GET", "/v1/models", None),
        ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2}),
        ("GET", "/health", None),
    ]
    markers = [uuid.uuid4().hex for _ in sent]
    for marker, (method, path, body) in zip(markers, sent, strict=True):
        # the marker in the query too: a second log line that wrote the request line (uvicorn's) would carry it
        response = httpx.request(
            method,
            f"{server.url}{path}?trace={marker}",
            json=body,
            headers={**AUTH, "X-Request-ID": marker},
            timeout=60,
        )
        assert response.status_code == 200
    deadline = time.monotonic() + 10  # a request's line is written once its response is over
    while not all(marker in server.log() for marker in markers) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # time for any second line to appear
    entries = log_entries(server)
    for marker, (method, path, _) in zip(markers, sent, strict=True):
        about = [e for e in entries if marker in json.dumps(e)]
        assert [(e["logger"], e["request_id"], e["message"].split()[:3]) for e in about] == [
            ("tkr_embed.access", marker, [method, path, "200"])
        ]


def test_a_stats_line_reports_the_running_load(server: ServerProcess) -> None:
    def complete() -> None:
        # 3 x 256 tokens span several of the 1 s stats intervals at the demo model's CPU speed (48 fit in one)
        body = {"prompt": "Once upon a time", "max_tokens": 256, "temperature": 0, "ignore_eos": True}
        httpx.post(server.url + "/v1/completions", headers=AUTH, json=body, timeout=300)

    started = time.time()
    workers = [threading.Thread(target=complete) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    time.sleep(1.5)  # one more interval
    lines = [
        e
        for e in log_entries(server)
        if e["logger"] == "tkr_embed.stats" and e["ts"] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))
    ]
    assert any(e["running"] >= 1 and e["generation_tokens_per_s"] > 0 for e in lines), server.log()[-3000:]
    assert all(e["message"].startswith("Avg prompt throughput: ") and "KV cache usage: " in e["message"] for e in lines)


def test_a_taken_port_stops_the_server_at_once_before_the_model_loads(demo_model_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = serve_command(
            str(demo_model_dir), "--port", str(port), "--model.device", "cpu", "--storage.data-dir", str(tmp_path)
        )
        with server_process(tmp_path, flags_only_env(), port, command) as server:
            assert server.wait_exit(60) == EXIT_START_FAILED
            log = server.log()
    assert f"cannot listen on 127.0.0.1:{port}" in log and "address already in use" in log.lower()
    assert "loaded from" not in log and "tkr_embed.engine" not in log  # no engine was started


def test_a_model_that_cannot_load_stops_the_server_with_status_3(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    port = free_port()
    command = serve_command(
        str(missing), "--port", str(port), "--model.device", "cpu", "--storage.data-dir", str(tmp_path)
    )
    with server_process(tmp_path, flags_only_env(), port, command) as server:
        assert server.wait_exit(120) == EXIT_START_FAILED
        failures = [e for e in log_entries(server) if e["level"] == "CRITICAL"]
    assert len(failures) == 1
    assert "the model could not be loaded" in failures[0]["message"] and str(missing) in failures[0]["message"]
