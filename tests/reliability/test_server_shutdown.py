"""Shutdown, as an operator and a client see it, against the real server process on the demo checkpoint.

On SIGTERM the server drains: /health 503 `draining`, new generation requests 503 with Retry-After, the stream
in flight keeps streaming until `server.graceful_shutdown_s`, then ends with finish_reason `length` and
`[DONE]`; the process exits 0 and neither the engine process nor multiprocessing's resource tracker is left.
A second signal exits at once.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))

from server_process import ServerProcess, children, demo_env, free_port, is_alive, server_process  # noqa: E402

GRACE_S = 3.0
LONG = {"prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0.0, "stream": True}
LONG_RESPONSE = {"input": "Tell me a long story.", "max_output_tokens": 3000, "temperature": 0.0, "stream": True}


class StreamReader(threading.Thread):
    """Reads one streaming completion's SSE lines, noting when each arrived."""

    def __init__(self, url: str, path: str = "/v1/completions", body: dict | None = None) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.path = path
        self.body = body or LONG
        self.lines: list[tuple[float, str]] = []
        self.first_chunk = threading.Event()
        self.status: int | None = None

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url + self.path, json=self.body, timeout=120) as response:
                self.status = response.status_code
                for line in response.iter_lines():
                    if line:
                        self.lines.append((time.monotonic(), line))
                        self.first_chunk.set()
        except httpx.HTTPError as error:  # the connection was cut: what the test then checks
            self.lines.append((time.monotonic(), f"<cut: {error}>"))

    def events(self) -> list[str]:
        """The `data:` payloads (and a note where the connection was cut)."""
        return [line.removeprefix("data: ") for _, line in self.lines if not line.startswith("event:")]


def _start_stream(server: ServerProcess, path: str = "/v1/completions", body: dict | None = None) -> StreamReader:
    reader = StreamReader(server.url, path, body)
    reader.start()
    assert reader.first_chunk.wait(60), server.log()[-3000:]
    return reader


def _assert_no_child_left(pids: list[int]) -> None:
    deadline = time.monotonic() + 2.0
    while any(is_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if is_alive(pid)], "child processes outlived the server"


@pytest.mark.parametrize("to_group", [False, True], ids=["to-the-server", "to-its-process-group"])
def test_sigterm_drains_the_stream_to_length_and_done_refuses_new_work_and_exits_0_with_no_child_left(
    demo_model_dir: Path, tmp_path: Path, to_group: bool
) -> None:
    """A SIGTERM to the whole process group (systemd's default, `timeout`) reaches the engine process too: it must
    keep serving the drain as well."""
    port = free_port()
    env = demo_env(demo_model_dir, tmp_path / "data", port, GENERATION_SERVER__GRACEFUL_SHUTDOWN_S=str(GRACE_S))
    with server_process(tmp_path, env, port) as server:
        server.wait_healthy()
        kids = children(server.pid)
        assert len(kids) == 2  # the engine process and the resource tracker
        reader = _start_stream(server)
        response_reader = _start_stream(server, "/v1/responses", LONG_RESPONSE)

        if to_group:
            os.killpg(server.pid, signal.SIGTERM)
        else:
            server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.3)
        health = httpx.get(server.url + "/health", timeout=5)
        assert health.status_code == 503 and health.json()["status"] == "draining"
        refused = httpx.post(server.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=5)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "draining"
        assert int(refused.headers["retry-after"]) > 0
        assert refused.headers["x-request-id"]

        reader.join(GRACE_S + 30)
        assert not reader.is_alive()
        assert reader.status == 200
        events = reader.events()
        assert events[-1] == "[DONE]"
        last = json.loads(events[-2])
        assert last["choices"][0]["finish_reason"] == "length"  # cut by the shutdown, as documented
        # The stream ran on through the grace period rather than being cut at the signal.
        streamed_after = [t - signalled for t, _ in reader.lines]
        assert max(streamed_after) >= GRACE_S - 0.5
        # The Responses stream ends with its documented terminal event too.
        response_reader.join(10)
        assert not response_reader.is_alive()
        last_event = json.loads(response_reader.events()[-1])
        assert last_event["type"] == "response.incomplete"
        assert last_event["response"]["status"] == "incomplete"
        assert server.wait_exit(30) == 0
    _assert_no_child_left(kids)


def test_a_second_signal_exits_at_once_with_no_child_left(demo_model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = demo_env(demo_model_dir, tmp_path / "data", port, GENERATION_SERVER__GRACEFUL_SHUTDOWN_S="60")
    with server_process(tmp_path, env, port) as server:
        server.wait_healthy()
        kids = children(server.pid)
        _start_stream(server)
        server.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while httpx.get(server.url + "/health", timeout=5).json()["status"] != "draining":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.process.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        assert server.wait_exit(10) == 128 + signal.SIGINT
        assert time.monotonic() - stopped < 5
    _assert_no_child_left(kids)
