"""Deeply nested input is a 400 that says so, never a 500, and every answer carries X-Request-ID. Against the real
`serve()` in its own process (production mode, the master key)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "gateway"))

from gateway_support import MASTER_KEY, Replica, start_replica  # noqa: E402

HEADERS = {"X-API-Key": MASTER_KEY, "Content-Type": "application/json"}
HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    server = start_replica(tmp_path_factory.mktemp("bad-input"), "server", {"GENERATION_RATE_LIMIT_ENABLED": "false"})
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def _schema(depth: int) -> dict:
    """A tool's parameters: an object whose one property is an object, `depth` times."""
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"inner": schema}}
    return schema


def _tools(depth: int) -> list[dict]:
    return [{"type": "function", "function": {"name": "lookup", "parameters": _schema(depth)}}]


@pytest.mark.parametrize(
    "path, field",
    [("/v1/chat/completions", "messages"), ("/v1/responses", "input"), ("/v1/completions", "prompt"), ("/chat", "x")],
)
def test_json_nested_1000_deep_is_a_400_naming_the_depth_with_a_request_id(
    replica: Replica, path: str, field: str
) -> None:
    body = f'{{"{field}": {"[" * 1000}"hi"{"]" * 1000}, "stream": true}}'
    response = httpx.post(replica.url + path, content=body, headers=HEADERS, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "json_too_deep" and "levels deep" in error["message"]
    assert response.headers["x-request-id"]


def test_a_tool_schema_nested_140_deep_is_a_400_with_a_request_id(replica: Replica) -> None:
    body = {"model": "gpt-oss-fake", "messages": HELLO, "tools": _tools(140)}
    response = httpx.post(replica.url + "/v1/chat/completions", content=json.dumps(body), headers=HEADERS, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "json_too_deep"
    assert response.headers["x-request-id"]


def test_a_tool_schema_nested_25_deep_is_served(replica: Replica) -> None:
    body = {"model": "gpt-oss-fake", "messages": HELLO, "tools": _tools(25), "max_tokens": 8}
    response = httpx.post(replica.url + "/v1/chat/completions", content=json.dumps(body), headers=HEADERS, timeout=30)
    assert response.status_code == 200, response.text
