"""A dead engine is never "healthy", against the real server process on the demo checkpoint: when the engine
process is killed, /health answers 503 `engine_dead` within a second, the stream in flight ends at once with an
error event and `[DONE]`, new generation requests get 503, and then the server exits non-zero
(`engine.on_failure: exit`, the default, for its supervisor to restart it) leaving no child process, or starts a
new engine and serves again (`restart`, at most `engine.max_restarts` times, then it exits too)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))

from server_process import ServerProcess, children, demo_env, free_port, is_alive, server_process  # noqa: E402

LONG = {"prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0.0, "stream": True}
SHORT = {"prompt": "Hello", "max_tokens": 4, "temperature": 0.0}


class StreamReader(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.events: list[str] = []
        self.first_chunk = threading.Event()
        self.ended_at: float | None = None

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url + "/v1/completions", json=LONG, timeout=120) as response:
                for line in response.iter_lines():
                    if line:
                        self.events.append(line.removeprefix("data: "))
                        self.first_chunk.set()
        except httpx.HTTPError as error:
            self.events.append(f"<cut: {error}>")
        self.ended_at = time.monotonic()


def _stream(server: ServerProcess) -> StreamReader:
    reader = StreamReader(server.url)
    reader.start()
    assert reader.first_chunk.wait(60), server.log()[-3000:]
    return reader


def _health(server: ServerProcess) -> tuple[int, str] | None:
    """/health's status code and body status; None once the server no longer accepts connections."""
    try:
        response = httpx.get(server.url + "/health", timeout=5)
    except httpx.ConnectError:
        return None
    return response.status_code, response.json()["status"]


def _kill_engine_and_time_the_health_answer(server: ServerProcess) -> tuple[float, str | None]:
    """SIGKILL the engine process; how long until /health stopped answering 200, and the status it gave then
    (None: the server had already stopped listening, on its way out)."""
    os.kill(server.engine_pid(), signal.SIGKILL)
    killed = time.monotonic()
    while True:
        health = _health(server)
        if health is None or health[0] == 503:
            return time.monotonic() - killed, health[1] if health else None
        assert time.monotonic() - killed < 5, "/health still says healthy"
        time.sleep(0.02)


def test_a_killed_engine_is_503_engine_dead_at_once_fails_the_stream_and_the_server_exits_non_zero(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    with server_process(tmp_path, demo_env(demo_model_dir, tmp_path / "data", port), port) as server:
        server.wait_healthy()
        kids = children(server.pid)
        reader = _stream(server)
        waited, status = _kill_engine_and_time_the_health_answer(server)
        # 503 engine_dead while the server stops; it may already have closed its listener on the way out.
        assert waited < 1.0 and status in ("engine_dead", None)
        reader.join(5)
        assert not reader.is_alive()
        assert reader.events[-1] == "[DONE]"
        error = json.loads(reader.events[-2])["error"]
        assert "engine" in error["message"]
        try:
            refused = httpx.post(server.url + "/v1/completions", json=SHORT, timeout=5)
            assert refused.status_code == 503 and refused.headers["retry-after"]
        except httpx.ConnectError:
            pass  # already gone: the exit below is what matters
        assert server.wait_exit(30) == 1
        assert "engine.on_failure=exit" in server.log()
    deadline = time.monotonic() + 2
    while any(is_alive(pid) for pid in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in kids if is_alive(pid)]


def test_with_restart_the_server_serves_again_then_exits_when_its_restarts_run_out(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = demo_env(
        demo_model_dir,
        tmp_path / "data",
        port,
        GENERATION_ENGINE__ON_FAILURE="restart",
        GENERATION_ENGINE__MAX_RESTARTS="1",
    )
    with server_process(tmp_path, env, port) as server:
        server.wait_healthy()
        first_engine = server.engine_pid()
        reader = _stream(server)
        waited, status = _kill_engine_and_time_the_health_answer(server)
        assert waited < 1.0 and status in ("engine_dead", "restarting")
        reader.join(5)
        assert reader.events[-1] == "[DONE]" and "error" in json.loads(reader.events[-2])
        server.wait_healthy(timeout_s=120)
        assert server.engine_pid() != first_engine
        answer = httpx.post(server.url + "/v1/completions", json=SHORT, timeout=60)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] > 0
        assert "restarting it (restart 1 of 1)" in server.log()

        _kill_engine_and_time_the_health_answer(server)  # no restart left
        assert server.wait_exit(30) == 1
