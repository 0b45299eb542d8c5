"""Connections a client holds cost the server little: a client that sends its headers a byte at a time
(slowloris), or nothing at all, is cut after `server.header_timeout_s` while other clients are served as fast as
ever; an idle kept-alive connection is closed after `server.keep_alive_timeout_s`; beyond
`server.max_connections` a request gets 503. Against the real `serve()` in its own process."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "gateway"))

from gateway_support import Replica, start_replica  # noqa: E402

HEADER_TIMEOUT_S = 1.0
KEEP_ALIVE_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    server = start_replica(
        tmp_path_factory.mktemp("connections"),
        "server",
        {
            "GENERATION_SERVER__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
            "GENERATION_SERVER__KEEP_ALIVE_TIMEOUT_S": str(KEEP_ALIVE_TIMEOUT_S),
            "GENERATION_SERVER__MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            "GENERATION_RATE_LIMIT_ENABLED": "false",
        },
    )
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_until_closed(sock: socket.socket, timeout_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it."""
    sock.settimeout(timeout_s)
    received = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return received, time.monotonic()
        received += chunk


def _health_latency(url: str) -> float:
    started = time.monotonic()
    assert httpx.get(url + "/health", timeout=5).status_code == 200
    return time.monotonic() - started


def test_a_slowloris_client_is_cut_after_the_header_deadline_while_others_are_served(replica: Replica) -> None:
    slow = _connect(replica.url)
    opened = time.monotonic()
    slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    slow.settimeout(0.05)
    latencies = []
    answer = b""
    cut_at = None
    while cut_at is None and time.monotonic() < opened + HEADER_TIMEOUT_S + 5:
        try:
            slow.sendall(b"x")  # one byte of a header that never ends
            answer = slow.recv(4096)  # anything, or the end of the stream: the server gave up on it
            cut_at = time.monotonic()
        except TimeoutError:
            latencies.append(_health_latency(replica.url))
        except OSError:
            cut_at = time.monotonic()
    assert cut_at is not None, "the slow client was never cut"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")
    assert HEADER_TIMEOUT_S - 0.1 <= cut_at - opened <= HEADER_TIMEOUT_S + 2.0
    assert len(latencies) > 5 and max(latencies) < 0.5  # another client was served all along, without delay


def test_a_silent_connection_gets_408_and_is_closed(replica: Replica) -> None:
    silent = _connect(replica.url)
    opened = time.monotonic()
    received, closed_at = _read_until_closed(silent, timeout_s=HEADER_TIMEOUT_S + 5)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert HEADER_TIMEOUT_S - 0.1 <= closed_at - opened <= HEADER_TIMEOUT_S + 2.0


def test_an_idle_kept_alive_connection_is_closed(replica: Replica) -> None:
    sock = _connect(replica.url)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answered = time.monotonic()
    received, closed_at = _read_until_closed(sock, timeout_s=KEEP_ALIVE_TIMEOUT_S + 5)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert closed_at - answered <= KEEP_ALIVE_TIMEOUT_S + 1.0


def test_beyond_max_connections_requests_get_503_until_the_idle_ones_are_cut(replica: Replica) -> None:
    idle = [_connect(replica.url) for _ in range(MAX_CONNECTIONS)]
    time.sleep(0.2)
    with httpx.Client(timeout=5) as client:
        assert client.get(replica.url + "/health").status_code == 503
    time.sleep(HEADER_TIMEOUT_S + 0.5)  # the silent connections have been cut by now
    assert httpx.get(replica.url + "/health", timeout=5).status_code == 200
    for sock in idle:
        sock.close()
