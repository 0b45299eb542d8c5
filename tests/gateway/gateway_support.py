"""Helpers of the gateway tests: a live server with the gateway over a fake engine, raw HTTP requests.

A uniquely named module (not conftest) so that the whole suite can import it in one pytest run."""

from __future__ import annotations

import socket
import sys
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
