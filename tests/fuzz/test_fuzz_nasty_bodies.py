"""Bodies a fuzzer (schemathesis over /openapi.json) or a careless client sends: each gets a clear 4xx
in the OpenAI error shape naming the field (never a 500 or a hang), or is served as OpenAI serves it."""

from __future__ import annotations

import json

import httpx
import pytest

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "Hi"}]


def chat(**fields) -> bytes:
    return json.dumps({"messages": HI, **fields}).encode()


# (path, raw body, content type, status, param)
REFUSED = [
    (CHAT, b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}', None, 400, "temperature"),
    (CHAT, b'{"messages": [{"role": "user", "content": "Hi"}], "top_p": Infinity}', None, 400, "top_p"),
    (CHAT, b'{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1e400}', None, 400, "max_tokens"),
    (CHAT, chat(max_tokens=10**30), None, 400, "max_tokens"),
    (CHAT, chat(max_tokens=0), None, 400, "max_tokens"),
    (CHAT, b"[" * 5000 + b"]" * 5000, None, 400, None),
    (CHAT, b'{"a":' * 3000 + b"1" + b"}" * 3000, None, 400, None),
    (CHAT, json.dumps({"messages": HI}).encode(), "text/plain", 415, None),
    (CHAT, b"messages=hi", "application/x-www-form-urlencoded", 415, None),
    (CHAT, b"", None, 400, None),
    (CHAT, b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', None, 400, None),
    (CHAT, b'"just a string"', None, 400, None),
    (CHAT, json.dumps({"messages": []}).encode(), None, 400, "messages"),
    (CHAT, json.dumps({"messages": "Hi"}).encode(), None, 400, "messages"),
    (
        CHAT,
        json.dumps({"messages": [{"role": "user", "content": "\ud800"}]}).encode(),
        None,
        400,
        "messages[0].content",
    ),
    (
        CHAT,
        json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]}).encode(),
        None,
        400,
        "messages[0].content",
    ),
    (
        CHAT,
        json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}).encode(),
        None,
        400,
        "messages[0].content",
    ),
    (
        CHAT,
        json.dumps({"messages": [*HI, {"role": "tool", "content": "42"}]}).encode(),
        None,
        400,
        "messages[1].tool_call_id",
    ),
    (CHAT, json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), None, 400, "messages[0].role"),
    (CHAT, chat(n=0), None, 400, "n"),
    (CHAT, chat(n=10_000), None, 400, "n"),
    (CHAT, chat(top_logprobs=3), None, 400, "top_logprobs"),
    (CHAT, chat(logprobs=True, top_logprobs=21), None, 400, "top_logprobs"),
    (CHAT, chat(stop=["x"] * 17), None, 400, "stop"),
    (CHAT, chat(stop=""), None, 400, "stop"),
    (CHAT, chat(top_k=10**30), None, 400, "top_k"),
    (CHAT, chat(seed="abc"), None, 400, "seed"),
    (CHAT, chat(tool_choice="required"), None, 400, "tool_choice"),
    (
        CHAT,
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": "no"}}]),
        None,
        400,
        "tools[0].function.parameters",
    ),
    (CHAT, chat(model="gpt-5"), None, 404, "model"),
    ("/v1/completions", json.dumps({"prompt": []}).encode(), None, 400, "prompt"),
    ("/v1/completions", json.dumps({"prompt": [[]]}).encode(), None, 400, "prompt"),
    ("/v1/completions", json.dumps({"prompt": [-1]}).encode(), None, 400, "prompt"),
    ("/v1/completions", json.dumps({"prompt": {"text": "x"}}).encode(), None, 400, "prompt"),
    ("/v1/completions", json.dumps({"prompt": "Hi", "logprobs": 21}).encode(), None, 400, "logprobs"),
    # A list of numbers is skipped whole by the lone-surrogate walk: one holding a string too is still walked.
    ("/v1/completions", json.dumps({"prompt": "Hi", "stop": ["ok", "\udc00"]}).encode(), None, 400, "stop"),
    (
        CHAT,
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"enum": [1, 2.5, None, "\ud800"]}}}]),
        None,
        400,
        "tools[0].function.parameters",
    ),
    ("/generate", json.dumps({"text": "Hi", "max_tokens": 0}).encode(), None, 400, "max_tokens"),
    ("/generate", json.dumps({"text": "Hi", "wat": 1}).encode(), None, 400, "wat"),
    ("/generate", json.dumps({"text": "\ud800"}).encode(), None, 400, "text"),
    ("/generate", b'{"text": "Hi", "temperature": NaN}', None, 400, "temperature"),
    ("/chat", json.dumps({"messages": [{"role": "tool", "content": "x"}]}).encode(), None, 400, "messages[0].role"),
    ("/stream", json.dumps({"text": ""}).encode(), None, 400, "text"),
    ("/v1/responses", json.dumps({"input": []}).encode(), None, 400, "input"),
    ("/v1/responses", json.dumps({"input": "Hi", "instructions": "\ud800"}).encode(), None, 400, "instructions"),
    ("/v1/responses", json.dumps({"input": "Hi", "max_output_tokens": 0}).encode(), None, 400, "max_output_tokens"),
    # Several problems: the missing required field is the one named.
    ("/v1/completions", json.dumps({"temperature": 5}).encode(), None, 400, "prompt"),
    (CHAT, json.dumps({"temperature": 5, "top_p": 7}).encode(), None, 400, "messages"),
    ("/generate", json.dumps({"temperature": 5}).encode(), None, 400, "text"),
]


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "param"),
    REFUSED,
    ids=[f"{i}-{case[0]}" for i, case in enumerate(REFUSED)],
)
def test_refused_with_a_clear_error(fuzz_server, path, body, content_type, status, param):
    url, engine = fuzz_server
    engine.reset()
    response = httpx.post(
        url + path, content=body, headers={"content-type": content_type or "application/json"}, timeout=30
    )
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error", "error_id"} and set(payload["error"]) == {"message", "type", "param", "code"}
    assert payload["error"]["param"] == param and payload["error"]["message"]
    assert payload["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert engine.submitted == []


# Served, as OpenAI serves them: (body fields, what the engine must have been asked)
SERVED = [
    ({"seed": -1}, lambda params: params.seed == -1),
    ({"seed": 2**64 + 5}, lambda params: params.seed == 2**64 + 5),
    ({"stop": "x"}, lambda params: True),
    ({"stop": ["x", "y"]}, lambda params: True),
    ({"logprobs": True}, lambda params: params.logprobs == 0),
    ({"top_k": -1}, lambda params: params.top_k == -1),
    ({"messages": [{"role": "user", "content": None}]}, lambda params: True),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}, lambda params: True),
]


@pytest.mark.parametrize(("fields", "check"), SERVED, ids=[json.dumps(f)[:40] for f, _ in SERVED])
def test_served(fuzz_server, fields, check):
    url, engine = fuzz_server
    engine.reset()
    response = httpx.post(url + CHAT, json={"messages": HI, "max_tokens": 4, **fields}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] == "stop"
    assert len(engine.submitted) == 1 and check(engine.submitted[0].params)
