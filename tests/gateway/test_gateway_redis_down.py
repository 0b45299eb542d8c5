"""rate_limit.fail_open with a redis-server that stops: true admits unchecked (no x-ratelimit headers),
false refuses with 503 and Retry-After; both count tkr_rate_limit_store_errors_total."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from gateway_support import MASTER_KEY, gateway_server
from redis_support import start_redis

COMPLETION = {"prompt": "hi", "max_tokens": 4}


def _store_errors(url: str) -> float:
    text = httpx.get(url + "/metrics", headers={"X-API-Key": MASTER_KEY}).text
    match = re.search(r"^tkr_rate_limit_store_errors_total ([0-9.]+)$", text, re.MULTILINE)
    assert match is not None
    return float(match.group(1))


def test_fail_open_and_fail_closed_when_redis_stops(tmp_path: Path) -> None:
    redis = start_redis(tmp_path)
    limits = {"enabled": True, "redis_url": redis.url, "requests_per_minute": 100}
    try:
        with (
            gateway_server(tmp_path / "open", rate_limit={**limits, "fail_open": True}) as open_server,
            gateway_server(tmp_path / "closed", rate_limit={**limits, "fail_open": False}) as closed_server,
        ):
            keys = {server.url: server.create_key("tenant")["api_key"] for server in (open_server, closed_server)}

            def post(url: str) -> httpx.Response:
                return httpx.post(
                    url + "/v1/completions", json=COMPLETION, headers={"X-API-Key": keys[url]}, timeout=30
                )

            for server in (open_server, closed_server):
                admitted = post(server.url)
                assert admitted.status_code == 200 and admitted.headers["x-ratelimit-limit-requests"] == "100"
                assert _store_errors(server.url) == 0

            redis.stop()

            unchecked = post(open_server.url)
            assert unchecked.status_code == 200 and "x-ratelimit-limit-requests" not in unchecked.headers
            assert unchecked.json()["choices"][0]["text"]
            assert _store_errors(open_server.url) == 1

            before = len(closed_server.engine.submitted)
            refused = post(closed_server.url)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
            error = refused.json()["error"]
            assert error["code"] == "rate_limit_unavailable" and error["type"] == "server_error"
            assert len(closed_server.engine.submitted) == before
            assert _store_errors(closed_server.url) == 1
            # The master key and admin routes never touch the limiter: operators keep their access.
            assert httpx.get(closed_server.url + "/admin/stats", headers={"X-API-Key": MASTER_KEY}).status_code == 200
    finally:
        redis.stop()
