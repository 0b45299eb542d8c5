"""/v1/chat/completions over a scripted engine: harmony channels, tool calls, usage, stop, logprobs."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

REASONED = "<|channel|>analysis<|message|>The user greets.<|end|><|start|>assistant<|channel|>final<|message|>Hello there!<|return|>"
TOOL_CALL = '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>'
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
HELLO = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)


def test_answer_and_reasoning_are_split(client, fake, harmony, tokenizer):
    script = harmony(REASONED)
    fake.script = lambda prompt, params: script
    response = client.chat.completions.create(model="gpt-oss-fake", messages=HELLO, max_tokens=100)
    message = response.choices[0].message
    assert message.content == "Hello there!"
    assert message.model_extra["reasoning"] == "The user greets."
    assert message.model_extra["reasoning_content"] == "The user greets."
    assert response.choices[0].finish_reason == "stop"
    submitted = fake.submitted[0]
    assert response.usage.prompt_tokens == len(submitted.prompt_token_ids)
    assert response.usage.completion_tokens == len(script)
    assert response.usage.total_tokens == len(submitted.prompt_token_ids) + len(script)
    assert response.usage.completion_tokens_details.reasoning_tokens == len(harmony("The user greets."))
    assert tokenizer.decode(submitted.prompt_token_ids).endswith("<|start|>assistant")
    assert submitted.params.stop_token_ids == [200002, 200012]


def test_stream_deltas_and_usage_chunk(client, fake, harmony):
    script = harmony(REASONED)
    fake.script = lambda prompt, params: script
    chunks = list(
        client.chat.completions.create(
            messages=HELLO, max_tokens=100, stream=True, stream_options={"include_usage": True}, model="gpt-oss-fake"
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning") or "" for c in chunks if c.choices)
    assert content == "Hello there!"
    assert reasoning == "The user greets."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == len(script)
    assert chunks[-1].usage.prompt_tokens == len(fake.submitted[0].prompt_token_ids)
    assert chunks[-1].usage.total_tokens == len(fake.submitted[0].prompt_token_ids) + len(script)
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_bytes_end_with_done(base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>Hi<|return|>")
    body = {"messages": HELLO, "stream": True, "max_tokens": 10}
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_bytes())
    events = [line for line in raw.split(b"\n\n") if line]
    assert all(event.startswith(b"data: ") for event in events)
    assert events[-1] == b"data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_tool_call_is_parsed_from_commentary(client, fake, harmony, tokenizer):
    fake.script = lambda prompt, params: harmony(TOOL_CALL)
    response = client.chat.completions.create(
        model="gpt-oss-fake",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        max_tokens=100,
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id
    assert "get_weather" in tokenizer.decode(fake.submitted[0].prompt_token_ids)


def test_tool_call_stream_deltas(client, fake, harmony):
    fake.script = lambda prompt, params: harmony(TOOL_CALL)
    chunks = list(
        client.chat.completions.create(
            model="gpt-oss-fake", messages=HELLO, tools=[WEATHER_TOOL], stream=True, max_tokens=100
        )
    )
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather" and deltas[0].id
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_named_tool_choice_is_forced_in_the_prompt(client, fake, harmony, tokenizer):
    fake.script = lambda prompt, params: harmony('{"city": "Oslo"}<|call|>')
    response = client.chat.completions.create(
        model="gpt-oss-fake",
        messages=HELLO,
        tools=[WEATHER_TOOL],
        max_tokens=50,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    prompt = tokenizer.decode(fake.submitted[0].prompt_token_ids)
    assert prompt.endswith(
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
    )
    call = response.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Oslo"})


def test_required_tool_choice_is_forced(client, fake, harmony, tokenizer):
    fake.script = lambda prompt, params: harmony('.get_weather <|constrain|>json<|message|>{"city": "Rome"}<|call|>')
    response = client.chat.completions.create(
        model="gpt-oss-fake", messages=HELLO, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=50
    )
    assert tokenizer.decode(fake.submitted[0].prompt_token_ids).endswith("<|channel|>commentary to=functions")
    assert response.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_tool_results_and_reasoning_are_accepted_back(client, fake, harmony, tokenizer):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>It is 20 degrees.<|return|>")
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "I should call the tool.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 20}'},
    ]
    response = client.chat.completions.create(
        model="gpt-oss-fake", messages=messages, tools=[WEATHER_TOOL], max_tokens=50
    )
    assert response.choices[0].message.content == "It is 20 degrees."
    prompt = tokenizer.decode(fake.submitted[0].prompt_token_ids)
    assert '{"temperature": 20}' in prompt
    assert "functions.get_weather" in prompt


def test_stop_string_cuts_the_answer_and_aborts(client, fake, harmony):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>one two STOP three four<|return|>")
    response = client.chat.completions.create(model="gpt-oss-fake", messages=HELLO, stop=["STOP"], max_tokens=100)
    assert response.choices[0].message.content == "one two "
    assert response.choices[0].finish_reason == "stop"
    assert fake.aborted == [fake.submitted[0].request_id]


def streamed_answer(client, **kwargs) -> tuple[list[str], list[str]]:
    """The content pieces of a streamed chat answer, and its finish reasons."""
    chunks = list(client.chat.completions.create(model="gpt-oss-fake", messages=HELLO, stream=True, **kwargs))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return pieces, reasons


def test_streamed_stop_string_across_tokens_is_never_sent(client, fake, harmony):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>one two three four<|return|>")
    pieces, reasons = streamed_answer(client, stop=["two three"], max_tokens=100)
    assert "".join(pieces) == "one " and reasons == ["stop"]
    assert fake.aborted == [fake.submitted[0].request_id]


def test_streamed_partial_stop_string_is_held_back_until_ruled_out(client, fake, harmony):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>one two thr<|return|>")
    pieces, reasons = streamed_answer(client, stop=["two three", "xyz"], max_tokens=100)
    assert "".join(pieces) == "one two thr" and reasons == ["stop"]
    # "two" and "two thr" may start "two three": sent only once the answer ended without it
    assert not any(piece.endswith(("two", "two ", "two thr")) for piece in pieces[:-1])


def test_sampling_fields_reach_the_engine(client, fake, harmony, tokenizer):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>ok<|return|>")
    response = client.chat.completions.create(
        model="gpt-oss-fake",
        messages=HELLO,
        seed=7,
        n=2,
        temperature=0.3,
        top_p=0.5,
        max_completion_tokens=9,
        max_tokens=50,
        reasoning_effort="high",
    )
    params = fake.submitted[0].params
    assert (params.seed, params.n, params.temperature, params.top_p, params.max_tokens) == (7, 2, 0.3, 0.5, 9)
    assert [c.message.content for c in response.choices] == ["ok", "ok"]
    assert [c.index for c in response.choices] == [0, 1]
    assert "Reasoning: high" in tokenizer.decode(fake.submitted[0].prompt_token_ids)


def test_length_finish_reason(client, fake, harmony):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>" + "word " * 50)
    response = client.chat.completions.create(model="gpt-oss-fake", messages=HELLO, max_tokens=6)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 6


def test_logprobs_of_answer_tokens(client, fake, harmony):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>Hello world<|return|>")
    response = client.chat.completions.create(
        model="gpt-oss-fake", messages=HELLO, logprobs=True, top_logprobs=2, max_tokens=20
    )
    content = response.choices[0].logprobs.content
    assert "".join(entry.token for entry in content) == "Hello world"
    assert all(entry.logprob == -0.5 and len(entry.top_logprobs) == 2 for entry in content)
    assert fake.submitted[0].params.logprobs == 2


def test_stream_lines_survive_unicode_line_separators(base_url, fake, harmony):
    # U+2028/U+2029/U+0085 are legal raw in JSON, but httpx's aiter_lines (str.splitlines) breaks
    # lines on them: the server escapes them, so every data line still parses.
    text = "a\u2028b\u2029c\x85d"
    fake.script = lambda prompt, params: harmony(f"<|channel|>final<|message|>{text}<|return|>")
    body = {"messages": HELLO, "stream": True, "max_tokens": 50}
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=30) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == text
