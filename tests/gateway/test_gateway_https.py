"""security.require_https: plain HTTP refused with 403 in the OpenAI error shape, /health still
reachable, X-Forwarded-Proto believed only from security.trusted_proxies."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from gateway_support import MASTER_KEY, SECRET_KEY, gateway_server

from tkr_embed.api.gateway import GatewayExtension
from tkr_embed.api.gateway.transport import TransportPolicy
from tkr_embed.api.server import create_app
from tkr_embed.config import Settings

ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}


def _app(tmp_path: Path, **security: object) -> object:
    settings = Settings(
        env="production",
        security={
            "auth_enabled": True,
            "api_key": MASTER_KEY,
            "secret_key": SECRET_KEY,
            "require_https": True,
            **security,
        },
        storage={"data_dir": str(tmp_path)},
    )
    return create_app(settings, extensions=[GatewayExtension(settings)])


async def _status(
    app: object, peer: str, headers: dict[str, str] | None = None, scheme: str = "http", path: str = "/metrics"
) -> httpx.Response:
    # /metrics answers the master key without the database (the app is not started): only the transport decides.
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://tkr.test") as client:
        return await client.get(path, headers={**ADMIN, **(headers or {})})


async def test_plain_http_is_refused_in_the_error_shape(tmp_path: Path) -> None:
    response = await _status(_app(tmp_path), "203.0.113.7")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "https_required" and error["type"] == "permission_error"
    assert "https://" in error["message"]
    assert (await _status(_app(tmp_path), "203.0.113.7", scheme="https")).status_code == 200


async def test_forwarded_proto_counts_only_from_trusted_peers(tmp_path: Path) -> None:
    app = _app(tmp_path)  # default trusted_proxies: loopback
    forwarded = {"X-Forwarded-Proto": "https"}
    assert (await _status(app, "203.0.113.7", forwarded)).status_code == 403  # anyone can send the header
    assert (await _status(app, "127.0.0.1", forwarded)).status_code == 200
    assert (await _status(app, "::1", forwarded)).status_code == 200
    assert (await _status(app, "127.0.0.1")).status_code == 403  # a local plain-HTTP caller
    # A chain that appends: the last value is the one our proxy wrote.
    assert (await _status(app, "127.0.0.1", {"X-Forwarded-Proto": "https, http"})).status_code == 403
    assert (await _status(app, "127.0.0.1", {"X-Forwarded-Proto": "http, https"})).status_code == 200

    networks = _app(tmp_path, trusted_proxies=["10.0.0.0/8"])
    assert (await _status(networks, "10.1.2.3", forwarded)).status_code == 200
    assert (await _status(networks, "127.0.0.1", forwarded)).status_code == 403
    nobody = _app(tmp_path, trusted_proxies=[])
    assert (await _status(nobody, "127.0.0.1", forwarded)).status_code == 403


async def test_off_by_default(tmp_path: Path) -> None:
    assert (await _status(_app(tmp_path, require_https=False), "203.0.113.7")).status_code == 200


def test_bad_trusted_proxy_entry_is_refused() -> None:
    with pytest.raises(ValueError, match="trusted_proxies: 'proxy.internal'"):
        TransportPolicy.of(["127.0.0.1", "proxy.internal"])


def test_live_server_refuses_plain_http_but_not_health(tmp_path: Path) -> None:
    with gateway_server(tmp_path, security={"require_https": True}) as server:
        key = {"X-API-Key": MASTER_KEY}
        refused = httpx.get(server.url + "/v1/models", headers=key)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "https_required"
        assert refused.headers["x-request-id"]
        health = httpx.get(server.url + "/health")
        assert health.status_code == 200 and health.json()["status"] == "healthy"
        # A TLS-terminating proxy on this host (loopback is trusted by default).
        proxied = httpx.get(server.url + "/v1/models", headers={**key, "X-Forwarded-Proto": "https"})
        assert proxied.status_code == 200 and proxied.json()["data"][0]["id"] == "gpt-oss-fake"
