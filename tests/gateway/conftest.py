"""Fixtures of the gateway tests: live servers (fake engine + gateway extension), keys, redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "api"))

from fake_engine import FakeEngine  # noqa: E402
from live_server import live_server  # noqa: E402

from tkr_embed.api.gateway import GatewayExtension  # noqa: E402
from tkr_embed.api.server import create_app  # noqa: E402
from tkr_embed.config import Settings  # noqa: E402
from tkr_embed.harmony.tokenizer import get_tokenizer  # noqa: E402

MASTER_KEY = "master-key-0123456789-gateway-tests"
SECRET_KEY = "server-secret-0123456789abcdef0123456789"
# Harmony the fake engine answers with: 3 reasoning tokens, then a final answer.
ANSWER = "<|channel|>analysis<|message|>think think<|end|><|start|>assistant<|channel|>final<|message|>Hello there<|return|>"


@dataclass
class GatewayServer:
    url: str
    engine: FakeEngine
    extension: GatewayExtension
    settings: Settings

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)

    def create_key(self, name: str, permissions: list[str] | None = None, **body: Any) -> dict[str, Any]:
        with self.admin() as client:
            response = client.post("/admin/api-keys", json={"name": name, "permissions": permissions, **body})
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture(scope="session")
def harmony_ids() -> Callable[[str], list[int]]:
    encoding = get_tokenizer().encoding

    def encode(text: str) -> list[int]:
        return encoding.encode(text, allowed_special="all")

    return encode


@contextmanager
def gateway_server(data_dir: Path, **sections: Any) -> Iterator[GatewayServer]:
    """A live server with the gateway over a fake engine answering ANSWER; `sections` override settings."""
    tok = get_tokenizer()
    engine = FakeEngine(decode=tok.decode)
    answer = tok.encoding.encode(ANSWER, allowed_special="all")
    engine.script = lambda prompt, params: answer
    security = {"auth_enabled": True, "api_key": MASTER_KEY, "secret_key": SECRET_KEY, **sections.pop("security", {})}
    storage = {"data_dir": str(data_dir), **sections.pop("storage", {})}
    sections.setdefault("env", "production")
    settings = Settings(security=security, storage=storage, **sections)
    extension = GatewayExtension(settings)
    app = create_app(settings, engine, tokenizer=tok, model_path="/models/fake", extensions=[extension])
    with live_server(app) as url:
        yield GatewayServer(url, engine, extension, settings)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away redis-server on a free port (no persistence), stopped after the session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (`make redis` installs it)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


def raw_request(url: str, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"") -> int:
    """Send `target` byte for byte (no client-side path normalisation); returns the status code."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"{method} {target} HTTP/1.1"]
    all_headers = {"Host": f"{host}:{port}", "Connection": "close", "Content-Length": str(len(body)), **(headers or {})}
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    return int(received.split(b" ", 2)[1])
