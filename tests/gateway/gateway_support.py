"""Helpers of the gateway tests: a live server with the gateway over a fake engine, raw HTTP requests.

A uniquely named module (not conftest) so that the whole suite can import it in one pytest run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent / "api"))

from fake_engine import FakeEngine  # noqa: E402
from live_server import live_server  # noqa: E402
from redis_support import free_port  # noqa: E402,F401 (re-exported for the replica tests)

from tkr_embed.api.gateway import GatewayExtension  # noqa: E402
from tkr_embed.api.server import create_app  # noqa: E402
from tkr_embed.config import Settings  # noqa: E402
from tkr_embed.harmony.tokenizer import get_tokenizer  # noqa: E402

MASTER_KEY = "master-key-0123456789-gateway-tests"
SECRET_KEY = "server-secret-0123456789abcdef0123456789"
# Harmony the fake engine answers with: 3 reasoning tokens, then a final answer.
ANSWER = (
    "<|channel|>analysis<|message|>think think<|end|><|start|>assistant<|channel|>final<|message|>Hello there<|return|>"
)


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


LAUNCHER = Path(__file__).parent / "serve_fake_engine.py"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Replica:
    """The real `serve()` in its own process (production mode, the master key), over the fake engine."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]
    cwd: Path

    def wait_healthy(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        restarts = 0
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=2).json()["status"] == "healthy":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            exited = self.process.poll() is not None
            # The port was free when chosen but taken before the child bound it: start again on another.
            if exited and restarts < 3 and "address already in use" in self.log_path.read_text().lower():
                restarts += 1
                port = free_port()
                self.process, self.url = launch(port, self.env, self.cwd, self.log_path), f"http://127.0.0.1:{port}"
                continue
            if exited or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch(port: int, env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, str(LAUNCHER), str(port)], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=log
        )


def start_replica(tmp: Path, name: str, env_overrides: dict[str, str]) -> Replica:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENERATION_")}
    env.update(
        {
            "GENERATION_ENV": "production",
            "GENERATION_API_KEY": MASTER_KEY,
            "GENERATION_SECRET_KEY": SECRET_KEY,
            "GENERATION_DATA_DIR": str(tmp / "data"),  # replicas of one tmp share the database
            "GENERATION_RATE_LIMIT_ENABLED": "true",
            "GENERATION_LOG_LEVEL": "info",
            "PYTHONPATH": str(REPO_ROOT),
            **env_overrides,
        }
    )
    port, log_path = free_port(), tmp / f"{name}.stderr"
    return Replica(f"http://127.0.0.1:{port}", launch(port, env, tmp, log_path), log_path, env, tmp)


@contextmanager
def running_replicas(folders: list[Path], env_overrides: dict[str, str]) -> Iterator[list[Replica]]:
    """One replica per folder (named a, b, ...; replicas given one folder share its SQLite database), each healthy
    before the body runs, all stopped after it."""
    started: list[Replica] = []
    try:
        for name, folder in zip("abcdefgh", folders, strict=False):
            started.append(start_replica(folder, name, env_overrides))
        for replica in started:
            replica.wait_healthy()
        yield started
    finally:
        for replica in started:
            replica.stop()
