"""Per-key rate limits over a live server (in memory): 429 with Retry-After and x-ratelimit-* headers,
headers on admitted responses too, per-key overrides, tokens per minute, master key unlimited."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from gateway_support import MASTER_KEY, GatewayServer, gateway_server

COMPLETION = {"prompt": "hi", "max_tokens": 4}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with gateway_server(
        tmp_path_factory.mktemp("ratelimit"),
        rate_limit={
            "enabled": True,
            "burst": 50,
            "requests_per_minute": 4,
            "requests_per_hour": 100,
            "requests_per_day": 1000,
        },
    ) as running:
        yield running


def _post(server: GatewayServer, key: str, body: dict = COMPLETION) -> httpx.Response:
    return httpx.post(server.url + "/v1/completions", json=body, headers={"X-API-Key": key}, timeout=30)


def test_request_after_the_limit_gets_429(server: GatewayServer) -> None:
    key = server.create_key("global-limits")["api_key"]
    admitted = [_post(server, key) for _ in range(4)]
    assert [r.status_code for r in admitted] == [200] * 4
    assert [r.headers["x-ratelimit-limit-requests"] for r in admitted] == ["4"] * 4
    assert [r.headers["x-ratelimit-remaining-requests"] for r in admitted] == ["3", "2", "1", "0"]
    assert all(r.headers["x-ratelimit-reset-requests"].endswith("s") for r in admitted)
    before = len(server.engine.submitted)
    refused = _post(server, key)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(server.engine.submitted) == before
    # The limit is per key: another key is untouched.
    other = server.create_key("other-tenant")["api_key"]
    assert _post(server, other).status_code == 200


def test_per_key_overrides_and_burst(server: GatewayServer) -> None:
    generous = server.create_key("generous", limits={"requests_per_minute": 6})["api_key"]
    assert [_post(server, generous).status_code for _ in range(7)] == [200] * 6 + [429]
    bursty = server.create_key("small-burst", limits={"burst": 2, "requests_per_minute": 100})["api_key"]
    statuses = [_post(server, bursty) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[2].headers["x-ratelimit-limit-requests"] == "2"
    assert "burst" in statuses[2].json()["error"]["message"]


def test_tokens_per_minute(server: GatewayServer) -> None:
    key = server.create_key("token-limited", limits={"tokens_per_minute": 5})["api_key"]
    first = _post(server, key)
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-tokens"] == "5"
    used = first.json()["usage"]["total_tokens"]
    assert used == 5  # the prompt and answer use the whole minute's budget...
    refused = _post(server, key)
    assert refused.status_code == 429  # ...so the next request waits
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(refused.headers["retry-after"]) >= 1


def test_openai_sdk_sees_rate_limit_error(server: GatewayServer) -> None:
    key = server.create_key("sdk", limits={"burst": 1})["api_key"]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    client.completions.create(model="gpt-oss-fake", prompt="hi", max_tokens=2)
    with pytest.raises(openai.RateLimitError) as raised:
        client.completions.create(model="gpt-oss-fake", prompt="hi", max_tokens=2)
    assert raised.value.response.headers["retry-after"]


def test_master_key_is_not_limited(server: GatewayServer) -> None:
    assert [_post(server, MASTER_KEY).status_code for _ in range(6)] == [200] * 6


def test_stats_count_rejections_per_key_without_key_labels(server: GatewayServer) -> None:
    noisy = server.create_key("noisy", limits={"burst": 1})
    quiet = server.create_key("quiet")
    assert [_post(server, noisy["api_key"]).status_code for _ in range(4)] == [200, 429, 429, 429]
    assert _post(server, quiet["api_key"]).status_code == 200
    with server.admin() as admin:
        stats = admin.get("/admin/stats").json()
        metrics = admin.get("/metrics").text
    rows = {row["key_id"]: row for row in stats["usage"]}
    assert (rows[noisy["id"]]["requests"], rows[noisy["id"]]["rate_limit_rejections"]) == (1, 3)
    assert (rows[quiet["id"]]["requests"], rows[quiet["id"]]["rate_limit_rejections"]) == (1, 0)
    assert stats["rate_limit"]["enabled"] is True and stats["rate_limit"]["storage"] == "memory"
    assert stats["rate_limit"]["rejections"] == sum(row["rate_limit_rejections"] for row in stats["usage"])
    # Prometheus keeps one process total, never a series per key.
    assert f"tkr_rate_limit_rejections_total {float(stats['rate_limit']['rejections'])}" in metrics
    assert noisy["id"] not in metrics


def test_a_key_with_rejections_but_no_usage_is_listed(server: GatewayServer) -> None:
    blocked = server.create_key("blocked", limits={"burst": 1})
    invalid = _post(server, blocked["api_key"], {"prompt": "hi", "max_tokens": -1})  # admitted, served nothing
    assert invalid.status_code == 400
    assert _post(server, blocked["api_key"]).status_code == 429
    with server.admin() as admin:
        row = next(r for r in admin.get("/admin/stats").json()["usage"] if r["key_id"] == blocked["id"])
    assert (row["name"], row["requests"], row["rate_limit_rejections"]) == ("blocked", 0, 1)
