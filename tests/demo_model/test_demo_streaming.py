"""Streaming gives what the same request gives without streaming, token for token, on every API family."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from demo_prompts import HELD_OUT_SEED, MAX_TOKENS

from tkr_embed.models.gpt_oss.demo_corpus import Dialogue, DialogueMaker


def _dialogues() -> list[Dialogue]:
    maker = DialogueMaker("test", HELD_OUT_SEED + 2)
    return [
        maker.arithmetic(effort="high", with_tools=False),
        maker.arithmetic(as_json=True, with_tools=False),
        maker.weather_call("auto"),
        maker.weather_call("named"),
        maker.weather_answer(),
        maker.greeting(),
    ]


DIALOGUES = _dialogues()


@pytest.mark.parametrize("dialogue", DIALOGUES, ids=[d.skill for d in DIALOGUES])
def test_chat_stream_equals_the_whole_answer(client: openai.OpenAI, model_id: str, dialogue: Dialogue) -> None:
    request = {"model": model_id, "temperature": 0, "max_tokens": MAX_TOKENS, "logprobs": True, **dialogue.request}
    whole = client.chat.completions.create(**request)
    content, reasoning, tokens, calls, finish = "", "", [], {}, None
    usage = None
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **request):
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        content += delta.content or ""
        reasoning += getattr(delta, "reasoning", None) or ""
        tokens += [t.token for t in (choice.logprobs.content or [])] if choice.logprobs else []
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
            entry["name"] += (call.function.name or "") if call.function else ""
            entry["arguments"] += (call.function.arguments or "") if call.function else ""
        finish = choice.finish_reason or finish
    message = whole.choices[0].message
    assert content == (message.content or "")
    assert reasoning == (getattr(message, "reasoning", None) or "")
    assert bool(reasoning) == (dialogue.reply[0].channel == "analysis")
    assert [calls[i] for i in sorted(calls)] == [
        {"name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls or []
    ]
    assert finish == whole.choices[0].finish_reason
    assert tokens == [t.token for t in (whole.choices[0].logprobs.content or [])]
    assert usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.parametrize("effort", ["low", "high"])
def test_native_stream_equals_generate(demo_server, effort: str) -> None:
    url = demo_server[0]
    body = {"text": "What is 48 + 37?", "temperature": 0, "max_tokens": MAX_TOKENS, "reasoning_level": effort}
    whole = httpx.post(url + "/generate", json=body, timeout=300).json()
    text, reasoning, last = "", "", None
    with httpx.stream("POST", url + "/stream", json=body, timeout=300) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])["chunk"]
            text += chunk["delta"]
            reasoning += chunk.get("reasoning", "")
            last = chunk
    assert whole["text"].startswith("The answer is ") and whole["reasoning"]
    assert (text, reasoning) == (whole["text"], whole["reasoning"])
    assert (last["finish_reason"], last["tokens_generated"]) == (whole["finish_reason"], whole["tokens_generated"])


def _reasoning_text(output: list[dict]) -> str:
    return "".join(
        part.get("text", "") for item in output if item["type"] == "reasoning" for part in item.get("content") or []
    )


def test_responses_stream_equals_the_whole_response(client: openai.OpenAI, model_id: str) -> None:
    request = {
        "model": model_id,
        "input": "What is 7 x 86?",
        "reasoning": {"effort": "medium"},
        "temperature": 0,
        "max_output_tokens": MAX_TOKENS,
    }
    whole = client.responses.create(**request)
    text, reasoning, completed = "", "", None
    for event in client.responses.create(stream=True, **request):
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type == "response.reasoning_text.delta":
            reasoning += event.delta
        elif event.type == "response.completed":
            completed = event.response
    assert whole.output_text.startswith("The answer is ")
    assert text == whole.output_text == completed.output_text
    assert reasoning == _reasoning_text(whole.model_dump()["output"]) != ""
    assert completed.usage.output_tokens == whole.usage.output_tokens
