"""The admin API over a live server: create / list / revoke keys, stats, redacted config, and a
database that holds no usable key material."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest
from gateway_support import MASTER_KEY, SECRET_KEY, GatewayServer, gateway_server

from tkr_embed.api.gateway.config_view import redact_url
from tkr_embed.security.hashing import KEY_LENGTH, KEY_PREFIX

REDIS_PASSWORD = "hunter2-redis-password"
DB_FILE = "tkr-embed.db"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with gateway_server(
        tmp_path_factory.mktemp("admin"),
        rate_limit={"enabled": False, "redis_url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0"},
        cache={"enabled": True},
    ) as running:
        yield running


@pytest.fixture
def admin(server: GatewayServer) -> Iterator[httpx.Client]:
    with server.admin() as client:
        yield client


def test_create_key_shows_the_secret_once(server: GatewayServer, admin: httpx.Client) -> None:
    response = admin.post(
        "/admin/api-keys",
        json={
            "name": "tenant-a",
            "permissions": ["generate:chat"],
            "expires_in_days": 30,
            "limits": {"requests_per_minute": 5, "tokens_per_minute": 1000},
        },
    )
    assert response.status_code == 201
    created = response.json()
    api_key = created["api_key"]
    assert api_key.startswith(KEY_PREFIX) and len(api_key) == KEY_LENGTH
    assert created["name"] == "tenant-a" and created["permissions"] == ["generate:chat"]
    assert created["key_hint"] == f"{api_key[:8]}...{api_key[-4:]}"
    expires = datetime.fromisoformat(created["expires_at"]) - datetime.fromisoformat(created["created_at"])
    assert expires == timedelta(days=30)
    assert created["limits"] == {
        "burst": None,
        "requests_per_minute": 5,
        "requests_per_hour": None,
        "requests_per_day": None,
        "tokens_per_minute": 1000,
    }

    listing = admin.get("/admin/api-keys")
    assert listing.status_code == 200
    assert api_key not in listing.text and api_key[8:-4] not in listing.text
    entry = next(item for item in listing.json()["data"] if item["id"] == created["id"])
    assert entry["active"] is True and "api_key" not in entry and "key_hash" not in entry
    assert entry["permissions"] == ["generate:chat"] and entry["limits"]["requests_per_minute"] == 5

    # The database dump holds neither the key nor anything but its keyed hash.
    dump = "\n".join(sqlite3.connect(server.settings.data_dir / DB_FILE).iterdump())
    assert api_key not in dump and api_key[8:-4] not in dump and MASTER_KEY not in dump and SECRET_KEY not in dump


def test_create_key_refusals(admin: httpx.Client) -> None:
    unknown = admin.post("/admin/api-keys", json={"name": "x", "permissions": ["generate:everything"]})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "permissions"
    assert admin.post("/admin/api-keys", json={"name": ""}).status_code == 400
    assert admin.post("/admin/api-keys", json={"name": "x", "expires_in_days": 0}).status_code == 400
    bad_limit = admin.post("/admin/api-keys", json={"name": "x", "limits": {"burst": 0}})
    assert bad_limit.status_code == 400 and bad_limit.json()["error"]["param"] == "limits.burst"


def test_revoke_key(server: GatewayServer, admin: httpx.Client) -> None:
    created = server.create_key("short-lived")
    assert admin.delete("/admin/api-keys/key_doesnotexist").status_code == 404
    assert admin.delete("/admin/api-keys/key_doesnotexist").json()["error"]["type"] == "not_found_error"
    revoked = admin.delete(f"/admin/api-keys/{created['id']}")
    assert revoked.status_code == 200
    assert revoked.json()["active"] is False and revoked.json()["revoked_at"]
    active_ids = [item["id"] for item in admin.get("/admin/api-keys", params={"include_revoked": False}).json()["data"]]
    assert created["id"] not in active_ids
    assert httpx.get(server.url + "/v1/models", headers={"X-API-Key": created["api_key"]}).status_code == 401


def test_config_is_redacted(admin: httpx.Client) -> None:
    response = admin.get("/admin/config")
    assert response.status_code == 200
    text = response.text
    for secret in (MASTER_KEY, SECRET_KEY, REDIS_PASSWORD):
        assert secret not in text
    config = response.json()["config"]
    assert config["security"]["api_key"] == "[REDACTED]" and config["security"]["secret_key"] == "[REDACTED]"
    assert config["rate_limit"]["redis_url"] == "redis://:[REDACTED]@127.0.0.1:1/0"
    assert config["auth_required"] is True and config["cache"]["enabled"] is True


def test_stats_count_requests_tokens_and_cache(server: GatewayServer, admin: httpx.Client) -> None:
    created = server.create_key("stats-tenant")
    body = {"messages": [{"role": "user", "content": "stats"}], "temperature": 0, "max_tokens": 32}
    headers = {"X-API-Key": created["api_key"]}
    first = httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=30).json()
    assert first["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    second = httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert second.headers["x-cache"] == "hit"
    stats = admin.get("/admin/stats").json()
    usage = next(row for row in stats["usage"] if row["key_id"] == created["id"])
    assert usage == {
        "key_id": created["id"],
        "name": "stats-tenant",
        "requests": 2,
        "prompt_tokens": 2 * first["usage"]["prompt_tokens"],
        "completion_tokens": 2 * first["usage"]["completion_tokens"],
        "reasoning_tokens": 2 * first["usage"]["completion_tokens_details"]["reasoning_tokens"],
        "total_tokens": 2 * first["usage"]["total_tokens"],
        "cache_hits": 1,
        "rate_limit_rejections": 0,
    }
    assert stats["cache"]["enabled"] is True and stats["cache"]["hits"] >= 1 and 0 < stats["cache"]["hit_rate"] <= 1
    assert stats["rate_limit"] == {"enabled": False, "storage": "off", "rejections": 0}
    assert stats["engine"]["kv_blocks_total"] == 64 and stats["engine"]["running"] == 0


def test_admin_routes_document_their_error_statuses_with_the_error_body(server: GatewayServer) -> None:
    paths = httpx.get(server.url + "/openapi.json", timeout=30).json()["paths"]
    error_body = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, method in [("/admin/api-keys", "post"), ("/admin/api-keys/{key_id}", "delete"), ("/admin/stats", "get")]:
        responses = paths[path][method]["responses"]
        documented = {
            status
            for status, response in responses.items()
            if response.get("content", {}).get("application/json", {}).get("schema") == error_body
        }
        assert documented == {"400", "401", "403", "404"}, path


def test_redact_url_cuts_passwords() -> None:
    assert (
        redact_url("postgresql+asyncpg://app:s3cret@db:5432/tkr") == "postgresql+asyncpg://app:[REDACTED]@db:5432/tkr"
    )
    assert redact_url("redis://:pw@cache:6379/0") == "redis://:[REDACTED]@cache:6379/0"
    assert redact_url("redis://:p@ss@w0rd@cache:6379/0") == "redis://:[REDACTED]@cache:6379/0"  # all of it
    assert redact_url("redis://cache:6379/0?password=pw&db=1") == "redis://cache:6379/0?password=[REDACTED]&db=1"
    assert redact_url("sqlite+aiosqlite:////data/tkr-embed.db") == "sqlite+aiosqlite:////data/tkr-embed.db"
