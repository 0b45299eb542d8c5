"""Two server processes (the real `serve()`) sharing one redis-server and one PostgreSQL database: a key's daily
token budget holds across them, request N+1 past it is refused whichever replica answers, and every request is
counted once (in usage_daily, in the Redis counters and in the budget the admin API reports)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import redis
from gateway_support import MASTER_KEY, Replica, running_replicas
from postgres_support import postgres_cluster_url

ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
ALLOWED_REQUESTS = 4


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    yield from postgres_cluster_url()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str) -> Iterator[list[Replica]]:
    env = {
        "GENERATION_DATABASE_URL": postgres_url,
        "GENERATION_REDIS_URL": redis_url,
        "GENERATION_RATE_LIMIT_ENABLED": "false",
    }
    with running_replicas([tmp_path_factory.mktemp(f"budget-{name}") for name in "ab"], env) as started:
        yield started


def _chat(replica: Replica, key: str) -> httpx.Response:
    return httpx.post(replica.url + "/v1/chat/completions", headers={"X-API-Key": key}, json=BODY, timeout=30)


def _usage(replica: Replica, key_id: str) -> dict:
    response = httpx.get(replica.url + "/admin/usage", headers=ADMIN, params={"key_id": key_id, "days": 1})
    assert response.status_code == 200, response.text
    return response.json()["data"][0]


def test_request_n_plus_1_past_the_budget_is_refused_on_either_replica_and_nothing_counts_twice(
    replicas: list[Replica], redis_url: str
) -> None:
    a, b = replicas
    probe = httpx.post(a.url + "/admin/api-keys", headers=ADMIN, json={"name": "probe"}).json()
    per_request = _chat(a, probe["api_key"]).json()["usage"]["total_tokens"]
    budget = ALLOWED_REQUESTS * per_request
    created = httpx.post(
        b.url + "/admin/api-keys", headers=ADMIN, json={"name": "budgeted", "budgets": {"day": {"total": budget}}}
    ).json()
    key, key_id = created["api_key"], created["id"]

    # Back to back, alternating replicas: faster than either replica writes its usage to the database.
    statuses = [_chat(replicas[i % 2], key).status_code for i in range(ALLOWED_REQUESTS)]
    assert statuses == [200] * ALLOWED_REQUESTS
    for replica in (a, b):
        refused = _chat(replica, key)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert refused.json()["budget"]["used"] == budget and refused.json()["budget"]["limit"] == budget
        assert refused.headers["x-budget-reset"].endswith("T00:00:00Z")

    # Redis counted each request once, and so did usage_daily once both replicas wrote their batches.
    today = datetime.now(UTC).date().isoformat()
    counters = redis.Redis.from_url(redis_url).hgetall(f"tkr:budget:{key_id}:{today}")
    assert int(counters[b"prompt"]) + int(counters[b"completion"]) == budget
    deadline = time.monotonic() + 10
    while True:
        usage = _usage(b, key_id)
        if usage["days"] and usage["days"][0]["requests"] == ALLOWED_REQUESTS or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    (day,) = usage["days"]
    assert day["requests"] == ALLOWED_REQUESTS and day["total_tokens"] == budget
    assert usage["budget"]["day"]["used"]["total"] == budget and usage["budget"]["month"]["used"]["total"] == budget
    assert _usage(a, key_id)["budget"]["day"]["used"]["total"] == budget
