"""The port is bound before the engine loads: while the load is blocked, the real `serve()` in its own process
already answers, /health says 503 `starting`, generation requests get 503 `starting` with Retry-After, and once the
load ends it serves; a stop signal while it loads ends it at once, with status 0."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))

from server_process import ServerProcess, demo_env, free_port, server_process  # noqa: E402

LAUNCHER = Path(__file__).parent / "serve_gated_engine.py"
COMPLETION = {"prompt": "hi", "max_tokens": 2}


@contextmanager
def gated_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """The server over an engine whose start waits for the returned gate file."""
    port, gate = free_port(), tmp_path / "gate"
    env = demo_env(tmp_path / "no-model", tmp_path / "data", port)
    command = [sys.executable, str(LAUNCHER), str(port), str(gate)]
    with server_process(tmp_path, env, port, command) as server:
        yield server, gate


def first_answer(server: ServerProcess, timeout_s: float = 60.0) -> httpx.Response:
    """/health's first answer, once the port accepts connections."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(server.url + "/health", timeout=5)
        except httpx.ConnectError:
            assert server.process.poll() is None, server.log()[-3000:]
            assert time.monotonic() < deadline, "the port was never bound"
            time.sleep(0.05)


def test_health_says_starting_while_the_engine_loads_then_healthy(tmp_path: Path) -> None:
    with gated_server(tmp_path) as (server, gate):
        health = first_answer(server)
        assert (health.status_code, health.json()["status"]) == (503, "starting")
        refused = httpx.post(server.url + "/v1/completions", json=COMPLETION, timeout=10)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
        assert refused.json()["error"]["code"] == "starting"
        assert httpx.get(server.url + "/v1/models", timeout=10).json()["error"]["code"] == "starting"
        time.sleep(1.0)  # still loading while the gate stays shut
        assert httpx.get(server.url + "/health", timeout=5).json()["status"] == "starting"

        gate.touch()
        server.wait_healthy(timeout_s=60)
        answer = httpx.post(server.url + "/v1/completions", json=COMPLETION, timeout=30)
        assert answer.status_code == 200 and answer.json()["model"] == "gpt-oss-fake"
        assert "listening on http://127.0.0.1:" in server.log()


def test_a_signal_while_loading_stops_the_server_at_once(tmp_path: Path) -> None:
    with gated_server(tmp_path) as (server, _):
        assert first_answer(server).json()["status"] == "starting"
        server.process.send_signal(signal.SIGTERM)
        assert server.wait_exit(30) == 0
        assert "stopping while the model loads" in server.log()
