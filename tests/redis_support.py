"""A throw-away redis-server for the tests (no persistence, a free localhost port).

One place for every folder that needs Redis: `tests/conftest.py` turns it into the session fixture
`redis_url`; tests that stop Redis on purpose (fail-open / fail-closed) start their own."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _served_by(port: int, pid: int) -> bool:
    """Whether the redis answering on `port` is our process (not whatever else took the port)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"INFO server\r\n")
            reply = b""
            while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return f"process_id:{pid}\r\n".encode() in reply


def start_redis(workdir: Path, attempts: int = 3) -> RedisServer:
    """Start redis-server and wait until it accepts connections; raises RuntimeError when it cannot.

    A port free when chosen may be taken before redis binds it; redis then exits and another is tried."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (`make redis` installs it)")
    for _ in range(attempts):
        port = free_port()
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = RedisServer(port, process)
        deadline = time.monotonic() + START_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            if _served_by(port, process.pid):
                return server
            time.sleep(0.05)
        server.stop()
    raise RuntimeError("redis-server did not start")
