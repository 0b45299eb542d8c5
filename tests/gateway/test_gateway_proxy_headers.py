"""Behind `serve()` (real uvicorn), X-Forwarded-Proto counts only from `security.trusted_proxies`: with the
list emptied, a local caller cannot claim HTTPS; with loopback trusted, a local proxy can."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from gateway_support import MASTER_KEY, Replica, start_replica

HTTPS_REQUIRED = {"GENERATION_REQUIRE_HTTPS": "true", "GENERATION_RATE_LIMIT_ENABLED": "false"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Replica]]:
    tmp = tmp_path_factory.mktemp("proxy-headers")
    started = {
        "none_trusted": start_replica(tmp, "none", {**HTTPS_REQUIRED, "GENERATION_SECURITY__TRUSTED_PROXIES": "[]"}),
        "loopback_trusted": start_replica(tmp, "loopback", HTTPS_REQUIRED),
    }
    try:
        for server in started.values():
            server.wait_healthy()
        yield started
    finally:
        for server in started.values():
            server.stop()


def _models(server: Replica, forwarded_proto: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    if forwarded_proto:
        headers["X-Forwarded-Proto"] = forwarded_proto
    return httpx.get(server.url + "/v1/models", headers=headers, timeout=30)


def test_no_trusted_proxy_means_the_header_is_ignored(servers: dict[str, Replica]) -> None:
    refused = _models(servers["none_trusted"], "https")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "https_required"
    assert _models(servers["none_trusted"], None).status_code == 403


def test_a_trusted_local_proxy_may_vouch_for_https(servers: dict[str, Replica]) -> None:
    assert _models(servers["loopback_trusted"], "https").status_code == 200
    assert _models(servers["loopback_trusted"], None).status_code == 403
    assert httpx.get(servers["loopback_trusted"].url + "/health").status_code == 200
