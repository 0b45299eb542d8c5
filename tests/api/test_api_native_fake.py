"""The original API (/generate, /chat, /stream, /health, /info) and /v1/completions, /v1/models."""

from __future__ import annotations

import json

import httpx
import openai

REASONED = "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>Paris is the capital.<|return|>"


def test_generate_returns_answer_and_reasoning_apart(base_url, fake, harmony, tokenizer):
    fake.script = lambda prompt, params: harmony(REASONED)
    response = httpx.post(
        base_url + "/generate",
        json={"text": "Capital of France?", "reasoning_level": "low", "max_tokens": 64, "temperature": 0.2},
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["text"], body["reasoning"], body["finish_reason"]) == ("Paris is the capital.", "Think.", "stop")
    assert body["reasoning_level"] == "low" and body["model"] == "gpt-oss-fake"
    assert body["tokens_generated"] == len(harmony(REASONED))
    num_prompt = len(fake.submitted[0].prompt_token_ids)
    assert body["usage"] == {
        "prompt_tokens": num_prompt,
        "completion_tokens": len(harmony(REASONED)),
        "reasoning_tokens": len(harmony("Think.")),
        "total_tokens": num_prompt + len(harmony(REASONED)),
    }
    prompt = tokenizer.decode(fake.submitted[0].prompt_token_ids)
    assert "Reasoning: low" in prompt and "Capital of France?" in prompt
    assert fake.submitted[0].params.temperature == 0.2


def test_chat_with_system_prompt(base_url, fake, harmony, tokenizer):
    fake.script = lambda prompt, params: harmony(REASONED)
    response = httpx.post(
        base_url + "/chat",
        json={
            "messages": [{"role": "user", "content": "Capital?"}],
            "system_prompt": "Answer tersely.",
            "max_tokens": 64,
        },
    )
    assert response.status_code == 200
    assert response.json()["text"] == "Paris is the capital."
    assert "Answer tersely." in tokenizer.decode(fake.submitted[0].prompt_token_ids)


def test_stream_events_exactly(base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>Hello world<|return|>")
    with httpx.stream("POST", base_url + "/stream", json={"text": "Hi", "max_tokens": 32}, timeout=30) as response:
        assert response.status_code == 200
        raw = b"".join(response.iter_bytes())
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert parsed[0] == {
        "chunk": {"delta": "Hello", "finish_reason": None, "tokens_generated": 4},
        "reasoning_level": "medium",
        "model": "gpt-oss-fake",
    }
    assert "".join(p["chunk"]["delta"] for p in parsed) == "Hello world"
    assert parsed[-1]["chunk"]["finish_reason"] == "stop"
    assert parsed[-1]["chunk"]["tokens_generated"] == 6


def test_completions_are_raw_text(base_url, fake, tokenizer):
    answer = tokenizer.encode(" and then some")
    fake.script = lambda prompt, params: answer + [200002]
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
    response = client.completions.create(
        model="gpt-oss-fake", prompt="Once upon a time", max_tokens=20, echo=True, logprobs=1
    )
    assert fake.submitted[0].prompt_token_ids == tokenizer.encode("Once upon a time")
    choice = response.choices[0]
    assert choice.text.startswith("Once upon a time and then some")
    # The echoed prompt's tokens come first (the first one has no logprob), then the generated ones.
    num_prompt = len(tokenizer.encode("Once upon a time"))
    assert choice.logprobs.token_logprobs[0] is None
    assert choice.logprobs.token_logprobs[num_prompt] == -0.5
    assert response.usage.prompt_tokens == len(tokenizer.encode("Once upon a time"))


def test_completions_stream_with_usage(base_url, fake, tokenizer):
    fake.script = lambda prompt, params: tokenizer.encode(" one two") + [200002]
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
    chunks = list(
        client.completions.create(
            model="gpt-oss-fake", prompt="Count:", max_tokens=20, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices).startswith(" one two")
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == len(tokenizer.encode("Count:"))


def test_models_health_info_docs(base_url, fake):
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["gpt-oss-fake"]
    health = httpx.get(base_url + "/health").json()
    assert health["status"] == "healthy" and health["model_loaded"] is True
    assert health["active_requests"] == 0 and health["uptime"] > 0 and health["memory"]["rss_bytes"] > 0
    info = httpx.get(base_url + "/info").json()
    assert (info["model"], info["context_length"], info["vocab_size"], info["demo_model"]) == (
        "gpt-oss-fake",
        4096,
        201088,
        False,
    )
    assert {"chat", "generate", "stream", "openai.chat.completions"} <= set(info["capabilities"])
    assert httpx.get(base_url + "/docs").status_code == 200
    paths = httpx.get(base_url + "/openapi.json").json()["paths"]
    assert {
        "/generate",
        "/chat",
        "/stream",
        "/health",
        "/info",
        "/v1/models",
        "/v1/chat/completions",
        "/v1/completions",
    } <= set(paths)
