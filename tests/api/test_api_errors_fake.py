"""Error shape, request ids, body limits, overload and client disconnects (scripted engine)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from leaving_client import post_then_leave, wait_until
from live_server import MAX_BODY_BYTES

HELLO = [{"role": "user", "content": "Hi"}]


def post(base_url: str, path: str, **kwargs) -> httpx.Response:
    return httpx.post(base_url + path, timeout=30, **kwargs)


def assert_error(response: httpx.Response, status: int, param: str | None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_id"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == param
    assert body["error"]["message"]
    assert response.headers["x-request-id"]
    return body


def test_bad_role_names_the_field(base_url, fake):
    response = post(base_url, "/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "x"}]})
    assert_error(response, 400, "messages[0].role")


def test_malformed_json(base_url, fake):
    response = post(
        base_url, "/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}
    )
    body = assert_error(response, 400, None)
    assert "JSON" in body["error"]["message"]


def test_non_object_body(base_url, fake):
    response = post(base_url, "/v1/chat/completions", json=[1, 2, 3])
    body = assert_error(response, 400, None)
    assert "object" in body["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/generate"])
def test_body_over_the_limit_is_413(base_url, fake, path):
    response = post(base_url, path, json={"messages": HELLO, "text": "x" * (MAX_BODY_BYTES + 10)})
    assert_error(response, 413, None)
    assert fake.submitted == []


def test_max_tokens_that_cannot_fit(base_url, fake):
    response = post(base_url, "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 100_000})
    assert_error(response, 400, "max_tokens")
    response = post(base_url, "/v1/chat/completions", json={"messages": HELLO, "max_completion_tokens": 100_000})
    assert_error(response, 400, "max_completion_tokens")
    response = post(base_url, "/v1/completions", json={"prompt": "Hi", "max_tokens": 100_000})
    assert_error(response, 400, "max_tokens")
    assert fake.submitted == []


def test_prompt_longer_than_the_context(base_url, fake):
    long_text = "hello " * 5000
    response = post(base_url, "/v1/chat/completions", json={"messages": [{"role": "user", "content": long_text}]})
    assert_error(response, 400, "messages")
    response = post(base_url, "/generate", json={"text": long_text})
    assert_error(response, 400, "text")


@pytest.mark.parametrize(
    ("prompt", "param", "message"),
    [
        ([5, 201088], "prompt", "prompt token ids must be integers in [0, 201088)"),
        ([[5], [-1]], "prompt[1]", "prompt token ids must be integers in [0, 201088)"),
        ([[], [5]], "prompt[0]", "the prompt must not be empty"),
    ],
)
def test_token_id_prompts_are_refused_as_the_engine_refuses_them(base_url, fake, prompt, param, message):
    response = post(base_url, "/v1/completions", json={"prompt": prompt, "max_tokens": 4})
    body = assert_error(response, 400, param)
    assert (body["error"]["message"], body["error"]["type"], body["error"]["code"]) == (
        message,
        "invalid_request_error",
        None,
    )
    assert fake.submitted == []


@pytest.mark.parametrize(
    ("path", "statuses"),
    [
        ("/generate", {"400", "413", "503"}),
        ("/chat", {"400", "413", "503"}),
        ("/stream", {"400", "413", "503"}),
        ("/v1/chat/completions", {"400", "404", "413", "503"}),
        ("/v1/completions", {"400", "404", "413", "503"}),
        ("/v1/responses", {"400", "404", "413", "503"}),
    ],
)
def test_each_route_documents_its_error_statuses_with_the_error_body(base_url, fake, path, statuses):
    responses = httpx.get(base_url + "/openapi.json", timeout=30).json()["paths"][path]["post"]["responses"]
    error_body = {"$ref": "#/components/schemas/ErrorResponse"}
    documented = {
        status
        for status, response in responses.items()
        if response.get("content", {}).get("application/json", {}).get("schema") == error_body
    }
    assert documented == statuses


def test_unknown_model_is_404(base_url, fake):
    response = post(base_url, "/v1/chat/completions", json={"model": "gpt-5", "messages": HELLO})
    assert_error(response, 404, "model")


def test_unknown_tool_choice(base_url, fake):
    response = post(
        base_url,
        "/v1/chat/completions",
        json={
            "messages": HELLO,
            "tool_choice": {"type": "function", "function": {"name": "nope"}},
        },
    )
    assert_error(response, 400, "tool_choice")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/generate"])
def test_chunked_body_over_the_limit_is_413(base_url, fake, path):
    # No Content-Length: the limit must hold on the bytes as they stream in, not only on the header.
    # Four pieces, 4 bytes over in all: the last one crosses the limit, so the server has read every
    # byte before it answers (no unread data to turn its close into a reset).
    piece = b"x" * (MAX_BODY_BYTES // 4 + 1)

    def chunked() -> Iterator[bytes]:
        yield from [piece] * 4

    response = post(base_url, path, content=chunked(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, None)
    assert fake.submitted == []


def test_request_id_is_echoed_or_made(base_url, fake):
    echoed = httpx.get(base_url + "/health", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    made = httpx.get(base_url + "/health")
    assert len(made.headers["x-request-id"]) == 32
    # An id that could forge log lines or grow without bound is replaced, never echoed.
    for unsafe in ("a b\tc", "x" * 129, "id;drop", "caf\u00e9"):
        replaced = httpx.get(base_url + "/health", headers={"X-Request-ID": unsafe.encode()})
        assert replaced.headers["x-request-id"] != unsafe and len(replaced.headers["x-request-id"]) == 32
    missing = httpx.get(base_url + "/nope")
    assert_error(missing, 404, None)


def test_full_queue_is_503_with_retry_after(base_url, fake):
    fake.max_waiting = 0
    response = post(base_url, "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 5})
    assert_error(response, 503, None)
    assert response.headers["retry-after"] == "2"
    response = post(base_url, "/stream", json={"text": "Hi", "max_tokens": 5})
    assert_error(response, 503, None)


def test_disconnect_aborts_a_non_streaming_request(base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>")
    fake.hang_after = 2
    post_then_leave(
        base_url, "/v1/chat/completions", {"messages": HELLO, "max_tokens": 50}, lambda: len(fake.submitted) == 1
    )
    assert wait_until(lambda: len(fake.submitted) == 1 and fake.aborted == [fake.submitted[0].request_id])


def test_disconnect_aborts_a_stream(base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>a b c d e f g")
    fake.hang_after = 4
    body = {"messages": HELLO, "max_tokens": 50, "stream": True}
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=30) as response:
        first = next(response.iter_lines())
        assert first.startswith("data: ")
    assert wait_until(lambda: len(fake.submitted) == 1 and fake.aborted == [fake.submitted[0].request_id])


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_client_still_sending_an_oversized_body_reads_the_413_not_a_reset(base_url, fake, declared):
    """The OpenAI SDK's async client (httpx) writes the whole body before it reads: a server that answered and
    closed with the body unread reset the connection, and the client saw a read error instead of the 413."""
    body = json.dumps({"messages": HELLO, "text": "x" * (8 * MAX_BODY_BYTES)}).encode()

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(20):
            content = body if declared else pieces()
            response = await client.post(base_url + "/v1/chat/completions", content=content)
            assert_error(response, 413, None)
    assert fake.submitted == []
