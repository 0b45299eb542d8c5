"""Authentication and permissions over a live server: where keys are accepted, 401 / 403, public
paths, and path spellings that must not change the decision."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import openai
import pytest
from gateway_support import MASTER_KEY, SECRET_KEY, GatewayServer, gateway_server, raw_request

from tkr_embed.db import Database
from tkr_embed.security.hashing import KeyHasher
from tkr_embed.security.keys import utcnow
from tkr_embed.security.store import KeyStore

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
COMPLETION = {"prompt": "hi", "max_tokens": 4}
GENERATE = {"text": "hi", "max_tokens": 8}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with gateway_server(tmp_path_factory.mktemp("auth")) as running:
        yield running


@pytest.fixture(scope="module")
def text_key(server: GatewayServer) -> str:
    return server.create_key("text-only", ["generate:text"])["api_key"]


@pytest.fixture(scope="module")
def chat_key(server: GatewayServer) -> str:
    return server.create_key("chat-and-stream", ["generate:chat", "generate:stream"])["api_key"]


PROTECTED = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/gpt-oss-fake", None),
    ("GET", "/info", None),
    ("POST", "/generate", GENERATE),
    ("POST", "/chat", {"messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/stream", GENERATE),
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/completions", COMPLETION),
    ("POST", "/v1/responses", {"input": "hi"}),
    ("GET", "/admin/api-keys", None),
    ("GET", "/admin/stats", None),
    ("GET", "/admin/config", None),
    ("GET", "/metrics", None),
    ("GET", "/no/such/route", None),
]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_every_route_but_the_public_ones_needs_a_key(
    server: GatewayServer, method: str, path: str, body: dict | None
) -> None:
    submitted = len(server.engine.submitted)
    response = httpx.request(method, server.url + path, json=body)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "missing_api_key"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["x-request-id"]
    assert len(server.engine.submitted) == submitted


@pytest.mark.parametrize("path", ["/health", "/openapi.json", "/docs"])
def test_public_paths_need_no_key(server: GatewayServer, path: str) -> None:
    assert httpx.get(server.url + path).status_code == 200


def test_key_accepted_in_each_place(server: GatewayServer, text_key: str) -> None:
    for kwargs in (
        {"headers": {"X-API-Key": text_key}},
        {"headers": {"Authorization": f"Bearer {text_key}"}},
        {"params": {"api_key": text_key}},
    ):
        response = httpx.get(server.url + "/v1/models", **kwargs)
        assert response.status_code == 200, kwargs
        assert response.json()["data"][0]["id"] == "gpt-oss-fake"


def test_invalid_keys_get_401(server: GatewayServer, text_key: str) -> None:
    for wrong in ("nope", text_key[:-1] + ("A" if text_key[-1] != "A" else "B"), MASTER_KEY + "x", "Basic abc"):
        response = httpx.get(server.url + "/v1/models", headers={"X-API-Key": wrong})
        assert response.status_code == 401, wrong
        assert response.json()["error"]["code"] == "invalid_api_key"
    # Another auth scheme carries no key at all.
    response = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Basic {text_key}"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"


def test_a_stored_hash_authenticates_nothing(server: GatewayServer, text_key: str) -> None:
    digest = KeyHasher(SECRET_KEY.encode()).digest(text_key)
    assert httpx.get(server.url + "/v1/models", headers={"X-API-Key": digest}).status_code == 401


async def test_expired_and_revoked_keys_get_401(server: GatewayServer) -> None:
    # A second connection to the server's database, from this test's event loop.
    db = Database(server.extension.gateway.db.url)
    past = KeyStore(db, KeyHasher(SECRET_KEY.encode()), clock=lambda: utcnow() - timedelta(days=2))
    expired = await past.create("expired", expires_in_days=1)
    await db.close()
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/v1/models", headers={"X-API-Key": expired.api_key})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"

        created = server.create_key("to-revoke")
        headers = {"X-API-Key": created["api_key"]}
        assert (await client.get("/v1/models", headers=headers)).status_code == 200
        revoke = await client.delete(f"/admin/api-keys/{created['id']}", headers={"X-API-Key": MASTER_KEY})
        assert revoke.status_code == 200 and revoke.json()["revoked_at"] is not None
        assert (await client.get("/v1/models", headers=headers)).status_code == 401


def test_permissions_per_route(server: GatewayServer, text_key: str, chat_key: str) -> None:
    def status(key: str, method: str, path: str, body: dict | None = None) -> int:
        return httpx.request(method, server.url + path, json=body, headers={"X-API-Key": key}, timeout=30).status_code

    assert status(text_key, "POST", "/v1/completions", COMPLETION) == 200
    assert status(text_key, "POST", "/generate", GENERATE) == 200
    assert status(text_key, "GET", "/info") == 200
    assert status(text_key, "POST", "/v1/chat/completions", CHAT) == 403
    assert status(text_key, "POST", "/chat", {"messages": [{"role": "user", "content": "hi"}]}) == 403
    assert status(text_key, "POST", "/v1/responses", {"input": "hi"}) == 403
    assert status(text_key, "POST", "/stream", GENERATE) == 403  # needs generate:stream
    assert status(text_key, "POST", "/v1/completions", {**COMPLETION, "stream": True}) == 403
    assert status(text_key, "POST", "/v1/completions", {**COMPLETION, "stream": "true"}) == 403
    assert status(text_key, "GET", "/admin/api-keys") == 403
    assert status(text_key, "GET", "/metrics") == 403

    assert status(chat_key, "POST", "/v1/chat/completions", CHAT) == 200
    assert status(chat_key, "POST", "/v1/chat/completions", {**CHAT, "stream": True}) == 200
    assert status(chat_key, "POST", "/v1/completions", COMPLETION) == 403
    assert status(chat_key, "GET", "/admin/stats") == 403

    assert status(MASTER_KEY, "GET", "/admin/stats") == 200
    assert status(MASTER_KEY, "POST", "/stream", GENERATE) == 200

    forbidden = httpx.post(server.url + "/v1/chat/completions", json=CHAT, headers={"X-API-Key": text_key})
    error = forbidden.json()["error"]
    assert error["type"] == "permission_error" and error["code"] == "insufficient_permissions"
    assert "generate:chat" in error["message"]


def test_path_spellings_do_not_change_the_decision(server: GatewayServer, text_key: str, chat_key: str) -> None:
    # No key: every spelling of a protected path is refused (never routed to a handler).
    for target in (
        "//v1/models",
        "/v1/%6Dodels",
        "/v1/models/",
        "///info",
        "/v1//models",
        "/%761/models",
        "/v1/chat/completions/",
        "/admin%2Fapi-keys",
        "/v1/%2563hat/completions",
    ):
        assert raw_request(server.url, "GET", target) == 401, target
    # Odd Host headers cannot make a protected path public.
    for host in ("localhost/health", "evil.example", "127.0.0.1:1/docs", ""):
        assert raw_request(server.url, "GET", "/v1/models", {"Host": host}) in (400, 401), host
    # A generate:text key cannot reach the chat handler through an encoded or doubled path.
    body = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}'
    headers = {"X-API-Key": text_key, "Content-Type": "application/json"}
    submitted = len(server.engine.submitted)
    for target in (
        "/v1/%63hat/completions",
        "//v1//chat/completions",
        "/v1/chat/completions/",
        "/v1/chat%2Fcompletions",
    ):
        assert raw_request(server.url, "POST", target, headers, body) == 403, target
    assert len(server.engine.submitted) == submitted
    # ...while the encoded spelling does reach the chat handler for a key allowed to chat.
    assert raw_request(server.url, "POST", "/v1/%63hat/completions", {**headers, "X-API-Key": chat_key}, body) == 200
    assert len(server.engine.submitted) == submitted + 1
    # Dot segments are refused: the router would not resolve them.
    assert raw_request(server.url, "GET", "/v1/models/..%2F..%2Fhealth") == 400
    assert raw_request(server.url, "GET", "/health/../admin/stats") == 400


def test_openai_sdk_with_keys(server: GatewayServer, text_key: str, chat_key: str) -> None:
    chat_client = openai.OpenAI(base_url=server.url + "/v1", api_key=chat_key, max_retries=0)
    reply = chat_client.chat.completions.create(model="gpt-oss-fake", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello there"
    assert [m.id for m in chat_client.models.list()] == ["gpt-oss-fake"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="tkr_wrong", max_retries=0).models.list()
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(base_url=server.url + "/v1", api_key=text_key, max_retries=0).chat.completions.create(
            model="gpt-oss-fake", messages=[{"role": "user", "content": "hi"}]
        )


def test_auth_off_lets_anonymous_callers_in_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tkr_embed.gateway")
    with gateway_server(tmp_path, env="development", security={"auth_enabled": False}) as dev:
        assert httpx.get(dev.url + "/v1/models").status_code == 200
        assert httpx.post(dev.url + "/v1/chat/completions", json=CHAT, timeout=30).status_code == 200
        assert httpx.get(dev.url + "/admin/stats").status_code == 200
    warnings = [r for r in caplog.records if r.name == "tkr_embed.gateway" and r.levelno == logging.WARNING]
    assert any("AUTHENTICATION IS OFF" in r.getMessage() for r in warnings)


def test_responses_route_is_covered(server: GatewayServer, text_key: str) -> None:
    chat_only = server.create_key("chat-no-stream", ["generate:chat"])["api_key"]
    headers = {"X-API-Key": chat_only}
    reply = httpx.post(
        server.url + "/v1/responses", json={"input": "hi", "max_output_tokens": 16}, headers=headers, timeout=30
    )
    assert reply.status_code == 200
    streamed = httpx.post(
        server.url + "/v1/responses", json={"input": "hi", "stream": True}, headers=headers, timeout=30
    )
    assert streamed.status_code == 403 and "generate:stream" in streamed.json()["error"]["message"]
    with server.admin() as admin:
        stats = admin.get("/admin/stats").json()
        key_id = next(
            row["id"] for row in admin.get("/admin/api-keys").json()["data"] if row["name"] == "chat-no-stream"
        )
    usage = next(row for row in stats["usage"] if row["key_id"] == key_id)
    assert usage["requests"] == 1 and usage["prompt_tokens"] == reply.json()["usage"]["input_tokens"]
    assert usage["reasoning_tokens"] == reply.json()["usage"]["output_tokens_details"]["reasoning_tokens"] > 0
