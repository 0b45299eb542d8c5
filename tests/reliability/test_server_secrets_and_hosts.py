"""Secrets stay secret and the Host header steers nothing, against the real `serve()` in its own process:
a key sent in the query string (however percent-encoded) never reaches the log; /admin/config hides a Redis
password that contains `@` whole; `/health/` with a forged Host is not redirected there; a placeholder master key
stops the server from starting in production."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "gateway"))

from gateway_support import LAUNCHER, MASTER_KEY, Replica, free_port, start_replica  # noqa: E402

REDIS_PASSWORD = "pA55@w0rdZ@x9Kq-3f9c2"


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    server = start_replica(
        tmp_path_factory.mktemp("secrets"),
        "server",
        {
            "GENERATION_RATE_LIMIT_ENABLED": "false",  # the Redis URL below is shown, never used
            "GENERATION_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0",
        },
    )
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def test_a_key_in_the_query_string_is_never_written_to_the_log(replica: Replica) -> None:
    created = httpx.post(
        replica.url + "/admin/api-keys", json={"name": "query"}, headers={"X-API-Key": MASTER_KEY}, timeout=30
    )
    key = created.json()["api_key"]
    encoded_name = replica.url + "/v1/models?api%5Fkey=" + key.replace("_", "%5F")
    fully_encoded = replica.url + "/v1/models?api_key=" + "".join(f"%{byte:02X}" for byte in key.encode())
    for url in (encoded_name, fully_encoded, replica.url + f"/v1/models?api_key={key}"):
        assert httpx.get(url, timeout=30).status_code == 200  # query-string keys are accepted (EventSource)
    master_in_query = replica.url + "/v1/models?api%5Fkey=" + MASTER_KEY.replace("-", "%2D")
    assert httpx.get(master_in_query, timeout=30).status_code == 200
    deadline = time.monotonic() + 10  # a request's line is written once its response is over
    while True:
        log = replica.log_path.read_text()
        entries = [json.loads(line) for line in log.splitlines() if line.strip()]
        logged = [e for e in entries if e["logger"] == "tkr_embed.access" and e["path"] == "/v1/models"]
        if len(logged) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [e["status"] for e in logged] == [200] * 4  # each request logged once, without its query string
    secret = key.split("_", 1)[1]
    assert secret not in log
    assert "%".join(f"{byte:02X}" for byte in secret.encode()) not in log
    assert MASTER_KEY.replace("-", "%2D") not in log


def test_admin_config_hides_a_redis_password_that_contains_at_signs(replica: Replica) -> None:
    response = httpx.get(replica.url + "/admin/config", headers={"X-API-Key": MASTER_KEY}, timeout=30)
    assert response.status_code == 200
    for fragment in REDIS_PASSWORD.split("@"):
        assert fragment not in response.text
    assert response.json()["config"]["storage"]["redis_url"] == "redis://:[REDACTED]@127.0.0.1:1/0"


def test_a_forged_host_is_never_a_redirect_target(replica: Replica) -> None:
    for path in ("/health/", "/v1/models/", "/docs/"):
        response = httpx.get(
            replica.url + path, headers={"Host": "evil.example", "X-API-Key": MASTER_KEY}, follow_redirects=False
        )
        assert not response.is_redirect, path
        assert "evil.example" not in response.headers.get("location", "")
        assert response.headers["x-request-id"]


@pytest.mark.parametrize("weak_key", ["your-api-key-here", "CHANGEME-changeme", "aaaaaaaaaaaaaaaaaaaa"])
def test_a_placeholder_master_key_stops_a_production_server_from_starting(
    replica: Replica, tmp_path: Path, weak_key: str
) -> None:
    env = {**replica.env, "GENERATION_API_KEY": weak_key, "GENERATION_DATA_DIR": str(tmp_path)}
    finished = subprocess.run(
        [sys.executable, str(LAUNCHER), str(free_port())], cwd=tmp_path, env=env, capture_output=True, timeout=60
    )
    assert finished.returncode == 2
    stderr = finished.stderr.decode()
    assert "security.api_key (GENERATION_API_KEY) is too easy to guess" in stderr
    assert weak_key not in stderr
