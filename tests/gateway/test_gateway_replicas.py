"""Two server processes (the real `serve()`, uvicorn subprocesses) sharing one redis-server and one
database: request N+1 gets 429 whichever process answers it, and no log line of either process
holds key material."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from gateway_support import MASTER_KEY, SECRET_KEY, Replica, running_replicas

LIMIT = 5


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[list[Replica]]:
    tmp = tmp_path_factory.mktemp("replicas")
    with running_replicas([tmp, tmp], {"GENERATION_REDIS_URL": redis_url}) as started:
        yield started


def test_request_n_plus_1_is_refused_across_replicas(replicas: list[Replica]) -> None:
    a, b = replicas
    created = httpx.post(
        a.url + "/admin/api-keys",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={"name": "shared", "limits": {"requests_per_minute": LIMIT, "burst": 100}},
    )
    assert created.status_code == 201
    key = created.json()["api_key"]
    body = {"prompt": "hi", "max_tokens": 2}
    # Alternate replicas and the three places a key may travel in.
    ways = [
        {"headers": {"X-API-Key": key}},
        {"headers": {"Authorization": f"Bearer {key}"}},
        {"params": {"api_key": key}},
    ]
    responses = [
        httpx.post(replicas[i % 2].url + "/v1/completions", json=body, timeout=30, **ways[i % 3]) for i in range(LIMIT)
    ]
    assert [r.status_code for r in responses] == [200] * LIMIT
    assert [r.headers["x-ratelimit-remaining-requests"] for r in responses] == [
        str(LIMIT - 1 - i) for i in range(LIMIT)
    ]
    for replica in (b, a):
        refused = httpx.post(replica.url + "/v1/completions", json=body, headers={"X-API-Key": key}, timeout=30)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error" and int(refused.headers["retry-after"]) >= 1
    # Every request counts against the key, other routes included (the key created on A, known to B).
    assert httpx.get(b.url + "/v1/models", headers={"X-API-Key": key}).status_code == 429


def test_logs_hold_no_key_material(replicas: list[Replica]) -> None:
    a, b = replicas
    master_headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    created = httpx.post(a.url + "/admin/api-keys", headers=master_headers, json={"name": "logged"}).json()
    key, traced_key_id = created["api_key"], created["id"]
    traced = httpx.get(b.url + "/v1/models", headers={"X-API-Key": key, "X-Request-ID": "trace-logs-1"})
    assert traced.status_code == 200
    httpx.get(a.url + "/v1/models", params={"api_key": key})
    httpx.get(b.url + "/v1/models", params={"api_key": MASTER_KEY})
    httpx.get(a.url + "/info", headers={"Authorization": f"Bearer {key}"})
    httpx.get(a.url + "/v1/models", headers={"X-API-Key": key + "-typo"})  # a 401 is logged too
    httpx.post(
        b.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
    )
    for replica in replicas:
        replica.stop()

    lines = [line for replica in replicas for line in replica.log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    text = "\n".join(lines)
    for secret in (key, key[4:], key[8:-4], MASTER_KEY, SECRET_KEY):
        assert secret not in text
    assert "Bearer tkr" not in text and "api_key=tkr" not in text
    assert not [e for e in entries if e["logger"] == "uvicorn.access"]  # requests are logged once, by us
    traced_lines = [e for e in entries if e.get("request_id") == "trace-logs-1" and e["logger"] == "tkr_embed.access"]
    assert [(e["path"], e["status"], e["key_id"]) for e in traced_lines] == [("/v1/models", 200, traced_key_id)]
    assert any(e["logger"] == "tkr_embed.access" and e.get("status") == 401 for e in entries)
