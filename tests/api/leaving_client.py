"""A client that sends a non-streaming request and hangs up once the engine has it (no client timeout)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

# A last guard for a stuck server, never a timing the test depends on.
GUARD_S = 60.0


def wait_until(condition: Callable[[], bool], seconds: float = GUARD_S) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def post_then_leave(base_url: str, path: str, body: dict[str, Any], submitted: Callable[[], bool]) -> None:
    """POST `body`, wait until `submitted()` says the engine holds the request, then close the connection."""
    host, port = base_url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=GUARD_S) as conn:
        conn.sendall(head + payload)
        if not wait_until(submitted):
            raise AssertionError(f"the engine never received the request to {path}")
