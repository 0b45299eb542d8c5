"""Clients that leave early free everything they started: against the real server process on the demo checkpoint.

Each cycle sends one generation request over a raw socket and closes it after 0 to 100 ms, on every route,
streaming and not, while two long streams keep the engine stepping. A request whose abort the engine lost
would go on decoding with nobody listening; at the end the engine must hold no request and no KV block.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))

from server_process import demo_env, free_port, server_process  # noqa: E402

# The figure is 1,000 cycles; the default keeps the test to well under a minute on two cores.
CYCLES = int(os.environ.get("TKR_DISCONNECT_CYCLES", "135"))
ORPHAN_TOKENS = 2000  # far more than the engine can decode before the end check: a lost abort shows
KV_BLOCKS = 512
DRAIN_S = 5.0  # after the last cycle, until nothing may be left in the engine


@dataclass
class Server:
    url: str
    host: str
    port: int
    model: str


@pytest.fixture(scope="module")
def server(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`python -m tkr_embed.api.server`: the engine in its own process, authentication off (development)."""
    workdir = tmp_path_factory.mktemp("disconnects")
    port = free_port()
    env = demo_env(
        demo_model_dir,
        workdir / "data",
        port,
        GENERATION_LOG_LEVEL="warning",
        GENERATION_SERVER__GRACEFUL_SHUTDOWN_S="2",
        GENERATION_ENGINE__MAX_NUM_SEQS="8",
        GENERATION_ENGINE__MAX_WAITING="256",
        GENERATION_ENGINE__KV_CACHE_BLOCKS=str(KV_BLOCKS),
    )
    with server_process(workdir, env, port) as process:
        process.wait_healthy()
        model = httpx.get(process.url + "/v1/models", timeout=10).json()["data"][0]["id"]
        yield Server(process.url, "127.0.0.1", port, model)
        process.process.send_signal(signal.SIGINT)
        process.wait_exit(60)


def _routes(model: str) -> list[tuple[str, dict]]:
    """Every generation route, streaming and not, each asking for far more tokens than the test waits for."""
    user = [{"role": "user", "content": "Tell me a long story."}]
    long = {"max_tokens": ORPHAN_TOKENS, "temperature": 0.0}
    routes = [
        ("/generate", {"text": "Tell me a long story.", **long}),
        ("/chat", {"messages": user, **long}),
        ("/stream", {"text": "Tell me a long story.", **long}),
    ]
    for stream in (False, True):
        routes += [
            ("/v1/chat/completions", {"model": model, "messages": user, "stream": stream, **long}),
            ("/v1/completions", {"model": model, "prompt": "Once upon a time", "stream": stream, **long}),
            (
                "/v1/responses",
                {"model": model, "input": "Tell me a story.", "stream": stream, "max_output_tokens": ORPHAN_TOKENS},
            ),
        ]
    return routes


def _submit_and_leave(server: Server, path: str, body: dict, stay_s: float) -> None:
    """Send the request, read at most what arrives within `stay_s`, then drop the connection."""
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head + payload)
        deadline = time.monotonic() + stay_s
        sock.setblocking(False)
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.005))
            try:
                if not sock.recv(65536):
                    break
            except BlockingIOError:
                pass


class _LongStream(threading.Thread):
    """A client reading a long stream to keep the engine busy, until told to leave."""

    def __init__(self, server: Server, index: int) -> None:
        super().__init__(daemon=True)
        self.server, self.index = server, index
        self.leave = threading.Event()
        self.chunks = 0

    def run(self) -> None:
        body = {"text": f"Keep talking {self.index}.", "max_tokens": 3000, "temperature": 0.0}
        with (
            httpx.Client(timeout=60) as client,
            client.stream("POST", self.server.url + "/stream", json=body) as response,
        ):
            for _ in response.iter_lines():
                self.chunks += 1
                if self.leave.is_set():
                    return


def _engine_state(server: Server) -> tuple[int, int, int]:
    """(requests in the engine, KV blocks in use, KV blocks in all), as /health reports them."""
    health = httpx.get(server.url + "/health", timeout=10).json()
    memory = health["memory"]
    return health["active_requests"], memory["kv_cache_blocks_used"], memory["kv_cache_blocks_total"]


def test_clients_that_disconnect_early_leave_no_request_running_and_every_kv_block_free(server: Server) -> None:
    busy = [_LongStream(server, i) for i in range(2)]
    for stream in busy:
        stream.start()
    deadline = time.monotonic() + 60
    while min(stream.chunks for stream in busy) < 2:  # both streams decode: every cycle meets a busy engine
        assert all(stream.is_alive() for stream in busy) and time.monotonic() < deadline, "the long streams failed"
        time.sleep(0.01)
    rng = random.Random(19)
    routes = _routes(server.model)
    for cycle in range(CYCLES):
        path, body = routes[cycle % len(routes)]
        _submit_and_leave(server, path, body, stay_s=rng.uniform(0.0, 0.1))
    assert all(stream.is_alive() for stream in busy), "the engine stopped serving the long streams"
    for stream in busy:
        stream.leave.set()
    for stream in busy:
        stream.join(timeout=30)

    # Every request above was abandoned. An abort ends its request at the engine's next step; the time allowed
    # also covers streaming requests still queued when their client left, whose route sees the disconnect only
    # once their first token arrives.
    deadline = time.monotonic() + DRAIN_S
    while (state := _engine_state(server))[:2] != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    active, used, total = state
    assert (active, used) == (0, 0), f"{active} requests and {used} KV blocks still in use after {CYCLES} cycles"
    assert total == KV_BLOCKS
