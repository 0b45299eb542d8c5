"""The response cache over a live server: hits skip the engine, replay the same bytes, are marked and
counted, stay within one key, and only deterministic requests are cached."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from gateway_support import GatewayServer, gateway_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with gateway_server(tmp_path_factory.mktemp("cache"), cache={"enabled": True, "max_size": 64}) as running:
        yield running


@pytest.fixture(scope="module")
def tenants(server: GatewayServer) -> tuple[dict[str, str], dict[str, str]]:
    return (
        {"X-API-Key": server.create_key("tenant-a")["api_key"]},
        {"X-API-Key": server.create_key("tenant-b")["api_key"]},
    )


def _post(server: GatewayServer, path: str, body: dict, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "greedy"}], "temperature": 0, "max_tokens": 32},
        ),
        ("/v1/completions", {"prompt": "seeded", "seed": 7, "max_tokens": 5}),
        ("/generate", {"text": "native", "temperature": 0, "max_tokens": 32}),
        ("/chat", {"messages": [{"role": "user", "content": "native chat"}], "seed": 3, "max_tokens": 32}),
    ],
)
def test_deterministic_request_hits_without_the_engine(
    server: GatewayServer, tenants: tuple[dict[str, str], dict[str, str]], path: str, body: dict
) -> None:
    tenant_a, _ = tenants
    before = len(server.engine.submitted)
    first = _post(server, path, body, tenant_a)
    assert first.status_code == 200 and first.headers["x-cache"] == "miss"
    assert len(server.engine.submitted) == before + 1
    second = _post(server, path, body, tenant_a)
    assert second.status_code == 200 and second.headers["x-cache"] == "hit"
    assert second.content == first.content
    assert len(server.engine.submitted) == before + 1


def test_streaming_hit_replays_the_same_bytes(
    server: GatewayServer, tenants: tuple[dict[str, str], dict[str, str]]
) -> None:
    tenant_a, _ = tenants
    for path, body in (
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "stream me"}],
                "temperature": 0,
                "max_tokens": 32,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ),
        ("/stream", {"text": "stream native", "temperature": 0, "max_tokens": 32}),
    ):
        before = len(server.engine.submitted)
        first = _post(server, path, body, tenant_a)
        second = _post(server, path, body, tenant_a)
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
        assert second.content == first.content and first.content.endswith(b"data: [DONE]\n\n")
        assert len(server.engine.submitted) == before + 1
        # The stream flag is part of the key: the same request without streaming is a new entry.
        if path == "/v1/chat/completions":
            plain = _post(server, path, {**body, "stream": False, "stream_options": None}, tenant_a)
            assert plain.headers["x-cache"] == "miss" and len(server.engine.submitted) == before + 2


def test_tenant_b_never_gets_tenant_a_entry(
    server: GatewayServer, tenants: tuple[dict[str, str], dict[str, str]]
) -> None:
    tenant_a, tenant_b = tenants
    body = {"messages": [{"role": "user", "content": "shared question"}], "temperature": 0, "max_tokens": 32}
    before = len(server.engine.submitted)
    assert _post(server, "/v1/chat/completions", body, tenant_a).headers["x-cache"] == "miss"
    answer_b = _post(server, "/v1/chat/completions", body, tenant_b)
    assert answer_b.headers["x-cache"] == "miss"
    assert len(server.engine.submitted) == before + 2
    assert _post(server, "/v1/chat/completions", body, tenant_b).headers["x-cache"] == "hit"


def test_any_sampling_change_is_a_new_entry(
    server: GatewayServer, tenants: tuple[dict[str, str], dict[str, str]]
) -> None:
    tenant_a, _ = tenants
    body = {"messages": [{"role": "user", "content": "params"}], "temperature": 0, "max_tokens": 32}
    assert _post(server, "/v1/chat/completions", body, tenant_a).headers["x-cache"] == "miss"
    for change in (
        {"max_tokens": 31},
        {"top_p": 0.5},
        {"stop": ["x"]},
        {"seed": 1},
        {"messages": [{"role": "user", "content": "params!"}]},
    ):
        assert _post(server, "/v1/chat/completions", {**body, **change}, tenant_a).headers["x-cache"] == "miss", change


def test_sampled_requests_are_never_cached(
    server: GatewayServer, tenants: tuple[dict[str, str], dict[str, str]]
) -> None:
    tenant_a, _ = tenants
    body = {"messages": [{"role": "user", "content": "random"}], "temperature": 0.8, "max_tokens": 32}
    before = len(server.engine.submitted)
    for _ in range(2):
        response = _post(server, "/v1/chat/completions", body, tenant_a)
        assert response.status_code == 200 and "x-cache" not in response.headers
    assert len(server.engine.submitted) == before + 2


def test_hits_are_counted_in_usage(server: GatewayServer) -> None:
    created = server.create_key("usage-cache")
    headers = {"X-API-Key": created["api_key"]}
    body = {"prompt": "count me", "temperature": 0, "max_tokens": 4}
    first = _post(server, "/v1/completions", body, headers).json()
    for _ in range(3):
        _post(server, "/v1/completions", body, headers)
    with server.admin() as admin:  # /admin/stats flushes the buffered usage first
        totals = next(row for row in admin.get("/admin/stats").json()["usage"] if row["key_id"] == created["id"])
    assert (totals["requests"], totals["cache_hits"]) == (4, 3)
    assert totals["prompt_tokens"] == 4 * first["usage"]["prompt_tokens"]
    assert totals["completion_tokens"] == 4 * first["usage"]["completion_tokens"]


def test_responses_api_uses_the_cache(server: GatewayServer, tenants: tuple[dict[str, str], dict[str, str]]) -> None:
    tenant_a, tenant_b = tenants
    body = {"input": "responses greedy", "temperature": 0, "max_output_tokens": 32}
    before = len(server.engine.submitted)
    first = _post(server, "/v1/responses", body, tenant_a)
    second = _post(server, "/v1/responses", body, tenant_a)
    assert (first.status_code, first.headers["x-cache"], second.headers["x-cache"]) == (200, "miss", "hit")
    assert second.content == first.content and first.json()["output"][-1]["content"][0]["text"] == "Hello there"
    assert len(server.engine.submitted) == before + 1
    # Another tenant, a streamed twin, an echoed field or a sampled request: never this entry.
    assert _post(server, "/v1/responses", body, tenant_b).headers["x-cache"] == "miss"
    assert _post(server, "/v1/responses", {**body, "metadata": {"run": "2"}}, tenant_a).headers["x-cache"] == "miss"
    assert _post(server, "/v1/responses", {**body, "instructions": "be brief"}, tenant_a).headers["x-cache"] == "miss"
    sampled = _post(server, "/v1/responses", {**body, "temperature": 0.7}, tenant_a)
    assert sampled.status_code == 200 and "x-cache" not in sampled.headers
    streamed = [_post(server, "/v1/responses", {**body, "stream": True}, tenant_a) for _ in range(2)]
    assert [r.headers["x-cache"] for r in streamed] == ["miss", "hit"]
    assert streamed[1].content == streamed[0].content and b"event: response.completed" in streamed[0].content
    assert len(server.engine.submitted) == before + 6


def test_hits_carry_server_timing(server: GatewayServer, tenants: tuple[dict[str, str], dict[str, str]]) -> None:
    tenant_a, _ = tenants
    body = {"prompt": "timed", "temperature": 0, "max_tokens": 4}
    for expected in ("miss", "hit"):
        response = _post(server, "/v1/completions", body, tenant_a)
        assert response.headers["x-cache"] == expected
        name, _, duration = response.headers["server-timing"].partition(";dur=")
        assert name == "total" and float(duration) > 0
