"""Usage rows exact under 200 concurrent requests; /metrics (Prometheus text) fed by the services."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_support import MASTER_KEY, GatewayServer, gateway_server
from prometheus_client.parser import text_string_to_metric_families

from tkr_embed.db import Database
from tkr_embed.security.usage import usage_by_day

CONCURRENT = 200


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with gateway_server(tmp_path_factory.mktemp("usage"), cache={"enabled": True}) as running:
        running.engine.max_waiting = 10_000
        yield running


def _metric(text: str, name: str) -> float:
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
    assert values, name
    return sum(values)


async def test_concurrent_requests_leave_exact_usage_rows(server: GatewayServer) -> None:
    keys = [server.create_key(f"tenant-{i}")["api_key"] for i in range(2)]
    with server.admin() as admin:
        key_ids = [
            row["id"] for row in admin.get("/admin/api-keys").json()["data"] if row["name"].startswith("tenant-")
        ]
    limits = httpx.Limits(max_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:

        async def one(index: int) -> httpx.Response:
            body = {"messages": [{"role": "user", "content": f"question {index}"}], "max_tokens": 32}
            return await client.post("/v1/chat/completions", json=body, headers={"X-API-Key": keys[index % 2]})

        responses = await asyncio.gather(*(one(i) for i in range(CONCURRENT)))
    assert [r.status_code for r in responses] == [200] * CONCURRENT
    expected = {}
    for index, key_id in enumerate(key_ids):
        mine = [r.json()["usage"] for r in responses[index::2]]
        expected[key_id] = (
            len(mine),
            sum(u["prompt_tokens"] for u in mine),
            sum(u["completion_tokens"] for u in mine),
            sum(u["completion_tokens_details"]["reasoning_tokens"] for u in mine),
            0,
        )
        assert expected[key_id][3] > 0
    with server.admin() as admin:
        admin.get("/admin/stats")  # flushes the buffered usage
    db = Database(server.extension.gateway.db.url)
    try:
        for key_id in key_ids:
            rows = await usage_by_day(db, key_id)
            assert len(rows) == 1
            totals = rows[0].totals
            assert (
                totals.requests,
                totals.prompt_tokens,
                totals.completion_tokens,
                totals.reasoning_tokens,
                totals.cache_hits,
            ) == expected[key_id]
    finally:
        await db.close()


def test_metrics_are_admin_only_and_fed_by_requests(server: GatewayServer) -> None:
    key = server.create_key("metrics-caller")["api_key"]
    assert httpx.get(server.url + "/metrics", headers={"X-API-Key": key}).status_code == 403
    before = httpx.get(server.url + "/metrics", headers={"X-API-Key": MASTER_KEY}).text
    body = {"messages": [{"role": "user", "content": "metrics"}], "temperature": 0, "max_tokens": 32, "stream": True}
    for _ in range(2):  # a miss, then a hit
        assert httpx.post(server.url + "/v1/chat/completions", json=body, headers={"X-API-Key": key}).status_code == 200
    response = httpx.get(server.url + "/metrics", headers={"X-API-Key": MASTER_KEY})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = response.text
    for name in ("tkr_time_to_first_token_seconds_count", "tkr_e2e_request_latency_seconds_count"):
        assert _metric(after, name) == _metric(before, name) + 1, name
    assert _metric(after, "tkr_inter_token_latency_seconds_count") > _metric(
        before, "tkr_inter_token_latency_seconds_count"
    )
    assert _metric(after, "tkr_response_cache_hits_total") == _metric(before, "tkr_response_cache_hits_total") + 1
    assert _metric(after, "tkr_generation_tokens_total") > _metric(before, "tkr_generation_tokens_total")
    assert _metric(after, "tkr_reasoning_tokens_total") > _metric(before, "tkr_reasoning_tokens_total")
    assert _metric(after, "tkr_prompt_tokens_total") > _metric(before, "tkr_prompt_tokens_total")
    for name in (
        "tkr_num_requests_running",
        "tkr_num_requests_waiting",
        "tkr_kv_cache_usage_perc",
        "tkr_rate_limit_rejections_total",
        "tkr_request_queue_time_seconds_count",
    ):
        _metric(after, name)
    assert 'route="/v1/chat/completions",status="200"' in after
    # No per-key label, no key material: the model's series carry the served model's name.
    label_names = set(re.findall(r'[{,](\w+)="', after))
    assert label_names == {"model_name", "finished_reason", "route", "status", "le"}
    assert set(re.findall(r'model_name="([^"]*)"', after)) == {"gpt-oss-fake"}
    assert key not in after and MASTER_KEY not in after


def test_metrics_public_by_config(tmp_path: Path) -> None:
    with gateway_server(tmp_path, security={"metrics_public": True}) as public:
        assert httpx.get(public.url + "/metrics").status_code == 200
        assert httpx.get(public.url + "/admin/stats").status_code == 401
