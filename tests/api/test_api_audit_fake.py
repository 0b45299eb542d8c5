"""Issue 4 audit over the scripted engine: reasoning on /stream, abort on the OpenAI routes,
/v1/completions with a list of prompts, lenient content parts."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from leaving_client import post_then_leave, wait_until

REASONED = (
    "<|channel|>analysis<|message|>Think hard.<|end|><|start|>assistant<|channel|>final<|message|>Paris.<|return|>"
)
HELLO = [{"role": "user", "content": "Hi"}]


def sse_json(raw: bytes) -> tuple[list[dict], bytes]:
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
    return [json.loads(e) for e in events[:-1]], events[-1]


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)


def test_native_stream_sends_reasoning_apart_from_the_answer(base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony(REASONED)
    with httpx.stream(
        "POST", base_url + "/stream", json={"text": "Capital?", "max_tokens": 64}, timeout=30
    ) as response:
        assert response.status_code == 200
        parsed, last = sse_json(b"".join(response.iter_bytes()))
    assert last == b"[DONE]"
    chunks = [p["chunk"] for p in parsed]
    assert "".join(c.get("reasoning", "") for c in chunks) == "Think hard."
    assert "".join(c["delta"] for c in chunks) == "Paris."
    # Nothing mixed: an event carries reasoning or answer text, and answer events keep the spec's keys.
    assert all(not (c.get("reasoning") and c["delta"]) for c in chunks)
    answer_events = [c for c in chunks if c["delta"]]
    assert all(set(c) == {"delta", "finish_reason", "tokens_generated"} for c in answer_events)
    first_reasoning = next(c for c in chunks if c.get("reasoning"))
    assert first_reasoning == {"delta": "", "finish_reason": None, "tokens_generated": 4, "reasoning": "Think"}
    assert chunks[-1]["finish_reason"] == "stop" and chunks[-1]["tokens_generated"] == len(harmony(REASONED))


def test_engine_abort_reads_as_length_on_openai_routes_and_abort_natively(base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>one two three four five<|return|>")
    fake.abort_after = 5
    chat = client(base_url).chat.completions.create(model="gpt-oss-fake", messages=HELLO, max_tokens=50)
    assert chat.choices[0].finish_reason == "length"
    assert chat.choices[0].message.content == "one two"
    stream = list(
        client(base_url).chat.completions.create(model="gpt-oss-fake", messages=HELLO, max_tokens=50, stream=True)
    )
    assert [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason] == ["length"]
    completion = client(base_url).completions.create(model="gpt-oss-fake", prompt="Hi", max_tokens=50)
    assert completion.choices[0].finish_reason == "length"
    native = httpx.post(base_url + "/generate", json={"text": "Hi", "max_tokens": 50}, timeout=30).json()
    assert native["finish_reason"] == "abort" and native["text"] == "one two"


def test_completions_with_a_list_of_prompts(base_url, fake, tokenizer):
    answers = {"Red": " apple", "Blue": " sky"}
    fake.script = lambda prompt, params: tokenizer.encode(answers[tokenizer.decode(prompt)]) + [200002]
    response = client(base_url).completions.create(model="gpt-oss-fake", prompt=["Red", "Blue"], n=2, max_tokens=8)
    assert [(c.index, c.text) for c in response.choices] == [
        (0, " apple<|return|>"),
        (1, " apple<|return|>"),
        (2, " sky<|return|>"),
        (3, " sky<|return|>"),
    ]
    assert sorted(tokenizer.decode(r.prompt_token_ids) for r in fake.submitted) == ["Blue", "Red"]
    assert response.usage.prompt_tokens == len(tokenizer.encode("Red")) + len(tokenizer.encode("Blue"))
    assert response.usage.completion_tokens == 4 * 2  # two tokens (word, <|return|>) a choice
    assert response.usage.total_tokens == response.usage.prompt_tokens + 4 * 2


def test_completions_stream_a_list_of_token_id_prompts(base_url, fake, tokenizer):
    red, blue = tokenizer.encode("Red"), tokenizer.encode("Blue")
    fake.script = lambda prompt, params: tokenizer.encode(" apple" if prompt == red else " sky") + [200002]
    chunks = list(
        client(base_url).completions.create(
            model="gpt-oss-fake",
            prompt=[red, blue],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            text[choice.index] += choice.text
    assert text == {0: " apple<|return|>", 1: " sky<|return|>"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == len(red) + len(blue)
    assert chunks[-1].usage.completion_tokens == 4
    assert chunks[-1].usage.total_tokens == len(red) + len(blue) + 4


def test_a_bad_prompt_in_the_list_names_it_and_submits_nothing(base_url, fake):
    response = httpx.post(base_url + "/v1/completions", json={"prompt": ["fine", ""]}, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt[1]"
    response = httpx.post(base_url + "/v1/completions", json={"prompt": ["x"] * 65}, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"
    response = httpx.post(base_url + "/v1/completions", json={"prompt": [True, 5]}, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"
    assert fake.submitted == []


def test_content_as_a_list_of_text_parts(base_url, fake, harmony, tokenizer):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>ok<|return|>")
    response = client(base_url).chat.completions.create(
        model="gpt-oss-fake",
        max_tokens=8,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
        ],
    )
    assert response.choices[0].message.content == "ok"
    assert "<|start|>user<|message|>Hello there<|end|>" in tokenizer.decode(fake.submitted[0].prompt_token_ids)


def test_leaving_a_stream_of_several_prompts_aborts_each(base_url, fake, tokenizer):
    fake.script = lambda prompt, params: tokenizer.encode(" a b c d e f")
    fake.hang_after = 2
    body = {"prompt": ["one", "two", "three"], "max_tokens": 50, "stream": True}
    with httpx.stream("POST", base_url + "/v1/completions", json=body, timeout=30) as response:
        assert next(response.iter_lines()).startswith("data: ")
    assert wait_until(lambda: len(fake.aborted) == 3)
    assert sorted(fake.aborted) == sorted(r.request_id for r in fake.submitted) and len(fake.submitted) == 3


@pytest.mark.parametrize(
    ("path", "body", "streaming"),
    [
        ("/generate", {"text": "Hi", "max_tokens": 50}, False),
        ("/chat", {"messages": HELLO, "max_tokens": 50}, False),
        ("/stream", {"text": "Hi", "max_tokens": 50}, True),
        ("/v1/completions", {"prompt": "Hi", "max_tokens": 50}, False),
        ("/v1/completions", {"prompt": "Hi", "max_tokens": 50, "stream": True}, True),
        ("/v1/completions", {"prompt": ["a", "b"], "max_tokens": 50}, False),
    ],
)
def test_a_client_that_leaves_aborts_its_request(base_url, fake, harmony, path, body, streaming):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>a b c d e f g")
    fake.hang_after = 5
    if streaming:
        with httpx.stream("POST", base_url + path, json=body, timeout=30) as response:
            assert next(response.iter_lines()).startswith("data: ")
    else:
        num_prompts = len(body["prompt"]) if isinstance(body.get("prompt"), list) else 1
        post_then_leave(base_url, path, body, lambda: len(fake.submitted) == num_prompts)
    assert wait_until(lambda: fake.submitted and len(fake.aborted) == len(fake.submitted))
    assert sorted(fake.aborted) == sorted(r.request_id for r in fake.submitted)
