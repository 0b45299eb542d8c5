"""/v1/responses over a scripted engine: output items, reasoning split, tool calls, stream order, errors."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from leaving_client import post_then_leave, wait_until

REASONED = (
    "<|channel|>analysis<|message|>The user greets.<|end|><|start|>assistant<|channel|>final"
    "<|message|>Hello there!<|return|>"
)
TOOL_CALL = (
    "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary "
    'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>'
)
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)


def post(base_url: str, body: dict) -> httpx.Response:
    return httpx.post(base_url + "/v1/responses", json=body, timeout=30)


def sse_events(base_url: str, body: dict) -> list[tuple[str, dict]]:
    with httpx.stream("POST", base_url + "/v1/responses", json={**body, "stream": True}, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_bytes()).decode()
    events = []
    for block in filter(None, raw.split("\n\n")):
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[6:])
        assert data["type"] == name_line[7:]
        events.append((data["type"], data))
    return events


def test_reasoning_and_answer_are_separate_items(client, fake, harmony, tokenizer):
    script = harmony(REASONED)
    fake.script = lambda prompt, params: script
    response = client.responses.create(model="gpt-oss-fake", input="Hi", max_output_tokens=100)
    assert response.status == "completed" and response.incomplete_details is None
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning, message = response.output
    assert reasoning.content[0].text == "The user greets." and reasoning.summary == []
    assert reasoning.id.startswith("rs_") and message.id.startswith("msg_") and response.id.startswith("resp_")
    assert message.content[0].text == "Hello there!" and message.role == "assistant"
    assert response.output_text == "Hello there!"
    submitted = fake.submitted[0]
    assert response.usage.input_tokens == len(submitted.prompt_token_ids)
    assert response.usage.output_tokens == len(script)
    assert response.usage.total_tokens == len(submitted.prompt_token_ids) + len(script)
    assert response.usage.output_tokens_details.reasoning_tokens == len(harmony("The user greets."))
    prompt = tokenizer.decode(submitted.prompt_token_ids)
    assert prompt.endswith("<|start|>user<|message|>Hi<|end|><|start|>assistant")
    assert submitted.params.stop_token_ids == [200002, 200012] and submitted.params.max_tokens == 100


def test_instructions_effort_and_sampling_reach_the_prompt(client, fake, harmony, tokenizer):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>ok<|return|>")
    response = client.responses.create(
        model="gpt-oss-fake",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Ping"}]}],
        instructions="Answer in French.",
        reasoning={"effort": "high"},
        temperature=0.3,
        top_p=0.5,
        max_output_tokens=9,
    )
    params = fake.submitted[0].params
    assert (params.temperature, params.top_p, params.max_tokens) == (0.3, 0.5, 9)
    prompt = tokenizer.decode(fake.submitted[0].prompt_token_ids)
    assert "Reasoning: high" in prompt and "Answer in French." in prompt and "<|message|>Ping<|end|>" in prompt
    assert response.reasoning.effort == "high" and response.instructions == "Answer in French."
    assert (response.temperature, response.top_p, response.max_output_tokens) == (0.3, 0.5, 9)


def test_function_call_item(client, fake, harmony, tokenizer):
    fake.script = lambda prompt, params: harmony(TOOL_CALL)
    response = client.responses.create(model="gpt-oss-fake", input="Weather in Paris?", tools=[WEATHER_TOOL])
    assert [item.type for item in response.output] == ["reasoning", "function_call"]
    call = response.output[1]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id.startswith("call_") and call.id.startswith("fc_") and call.status == "completed"
    assert response.status == "completed"
    assert response.tools[0].name == "get_weather"
    assert "get_weather" in tokenizer.decode(fake.submitted[0].prompt_token_ids)


def test_function_output_and_reasoning_are_accepted_back(client, fake, harmony, tokenizer):
    fake.script = lambda prompt, params: harmony(TOOL_CALL)
    first = client.responses.create(model="gpt-oss-fake", input="Weather in Paris?", tools=[WEATHER_TOOL])
    call = first.output[1]
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>It is 20 degrees.<|return|>")
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        *[item.model_dump() for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature": 20}'},
    ]
    second = client.responses.create(model="gpt-oss-fake", input=history, tools=[WEATHER_TOOL])
    assert second.output_text == "It is 20 degrees."
    prompt = tokenizer.decode(fake.submitted[1].prompt_token_ids)
    assert (
        "<|start|>assistant<|channel|>analysis<|message|>Need the weather.<|end|>"
        "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json"
        '<|message|>{"city": "Paris"}<|call|>'
    ) in prompt
    assert (
        '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"temperature": 20}<|end|>'
        in prompt
    )
    assert prompt.endswith("<|start|>assistant")


def test_named_and_required_tool_choice_are_forced(client, fake, harmony, tokenizer):
    fake.script = lambda prompt, params: harmony('{"city": "Oslo"}<|call|>')
    response = client.responses.create(
        model="gpt-oss-fake", input="Hi", tools=[WEATHER_TOOL], tool_choice={"type": "function", "name": "get_weather"}
    )
    assert tokenizer.decode(fake.submitted[0].prompt_token_ids).endswith(
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
    )
    assert [(i.type, i.name, i.arguments) for i in response.output] == [
        ("function_call", "get_weather", '{"city": "Oslo"}')
    ]
    fake.script = lambda prompt, params: harmony('.get_weather <|constrain|>json<|message|>{"city": "Rome"}<|call|>')
    response = client.responses.create(model="gpt-oss-fake", input="Hi", tools=[WEATHER_TOOL], tool_choice="required")
    assert tokenizer.decode(fake.submitted[1].prompt_token_ids).endswith("<|channel|>commentary to=functions")
    assert response.output[0].name == "get_weather" and json.loads(response.output[0].arguments) == {"city": "Rome"}


def test_max_output_tokens_makes_it_incomplete(client, fake, harmony):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>" + "word " * 50)
    response = client.responses.create(model="gpt-oss-fake", input="Hi", max_output_tokens=6)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 6
    assert response.output[0].status == "incomplete"


def test_stream_events_in_order(base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony(REASONED)
    events = sse_events(base_url, {"input": "Hi", "max_output_tokens": 100})
    kinds = [kind for kind, _ in events]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    collapsed = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    assert collapsed == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    data = [d for _, d in events]
    assert "".join(d["delta"] for d in data if d["type"] == "response.reasoning_text.delta") == "The user greets."
    assert "".join(d["delta"] for d in data if d["type"] == "response.output_text.delta") == "Hello there!"
    assert data[0]["response"]["status"] == "in_progress" and data[0]["response"]["output"] == []
    final = data[-1]["response"]
    assert final["status"] == "completed"
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["output"][1]["content"][0]["text"] == "Hello there!"
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == len(harmony("The user greets."))
    added = [d for d in data if d["type"] == "response.output_item.added"]
    assert [(d["output_index"], d["item"]["status"]) for d in added] == [(0, "in_progress"), (1, "in_progress")]


def test_stream_function_call_with_the_sdk(client, fake, harmony):
    fake.script = lambda prompt, params: harmony(TOOL_CALL)
    events = list(client.responses.create(model="gpt-oss-fake", input="Weather?", tools=[WEATHER_TOOL], stream=True))
    kinds = [event.type for event in events]
    assert kinds[-1] == "response.completed"
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"city": "Paris"}
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"city": "Paris"}
    item_done = [e.item for e in events if e.type == "response.output_item.done"]
    assert [(item.type, item.status) for item in item_done] == [
        ("reasoning", "completed"),
        ("function_call", "completed"),
    ]
    assert item_done[1].name == "get_weather" and item_done[1].call_id == events[-1].response.output[1].call_id


def test_stream_helper_gives_the_final_response(client, fake, harmony):
    fake.script = lambda prompt, params: harmony(REASONED)
    with client.responses.stream(model="gpt-oss-fake", input="Hi") as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "Hello there!" and final.output_text == "Hello there!"
    assert final.output[0].content[0].text == "The user greets."


def test_stream_incomplete_ends_with_response_incomplete(base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>" + "word " * 50)
    events = sse_events(base_url, {"input": "Hi", "max_output_tokens": 5})
    assert events[-1][0] == "response.incomplete"
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [d["item"]["status"] for k, d in events if k == "response.output_item.done"] == ["incomplete"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "Hi", "store": True}, "store"),  # this app runs without the gateway's database
        ({"input": []}, "input"),
        ({"input": [{"role": "robot", "content": "Hi"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0]"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        (
            {
                "input": [
                    {"role": "user", "content": "Hi"},
                    {"type": "function_call_output", "call_id": "nope", "output": "1"},
                ]
            },
            "input[1].call_id",
        ),
        ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {"input": "Hi", "tool_choice": {"type": "function", "name": "missing"}, "tools": [WEATHER_TOOL]},
            "tool_choice",
        ),
        ({"input": "Hi", "tool_choice": "required"}, "tool_choice"),
        ({"input": "Hi", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"input": "Hi", "max_output_tokens": 4096}, "max_output_tokens"),
        ({"input": "Hi", "text": {"format": {"type": "json_schema"}}}, "text.format.name"),
        ({"input": "Hi", "text": {"format": {"type": "xml"}}}, "text.format"),
    ],
)
def test_bad_requests_name_the_field(base_url, fake, body, param):
    response = post(base_url, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert fake.submitted == []


def test_unknown_model_is_404(base_url, fake):
    response = post(base_url, {"model": "gpt-4o", "input": "Hi"})
    assert response.status_code == 404 and response.json()["error"]["param"] == "model"


def test_without_a_database_nothing_is_stored_and_no_id_is_found(base_url, fake, harmony):
    """This app runs without the gateway, so without a database: `store` (default true) stores nothing and says so."""
    fake.script = lambda prompt, params: harmony(REASONED)
    answer = post(base_url, {"input": "Hi"}).json()
    assert answer["store"] is False
    for method, path in [("GET", f"/v1/responses/{answer['id']}"), ("DELETE", f"/v1/responses/{answer['id']}")]:
        missing = httpx.request(method, base_url + path, timeout=30)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "response_not_found"
    continued = post(base_url, {"input": "Hi", "previous_response_id": answer["id"]})
    assert continued.status_code == 404 and continued.json()["error"]["param"] == "previous_response_id"
    assert len(fake.submitted) == 1


def test_full_queue_is_503_before_the_stream_starts(base_url, fake):
    fake.max_waiting = 0
    response = post(base_url, {"input": "Hi", "stream": True})
    assert response.status_code == 503 and response.headers["retry-after"] == "2"


def test_disconnect_aborts_the_stream(base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>a b c d e f g")
    fake.hang_after = 4
    with httpx.stream("POST", base_url + "/v1/responses", json={"input": "Hi", "stream": True}, timeout=30) as response:
        assert next(response.iter_lines()) == "event: response.created"
    assert wait_until(lambda: fake.aborted == [r.request_id for r in fake.submitted])
    assert len(fake.submitted) == 1 and fake.aborted == [fake.submitted[0].request_id]


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory):
    import torch
    from live_server import live_server

    from tkr_embed.api.server import create_app
    from tkr_embed.config import Settings

    torch.set_num_threads(2)
    settings = Settings(
        model={"device": "cpu"},  # no model path: the demo checkpoint is written and served
        engine={"max_num_seqs": 1, "max_waiting": 1, "kv_cache_blocks": 256},
        storage={"data_dir": str(tmp_path_factory.mktemp("responses-demo"))},
    )
    with live_server(create_app(settings)) as url:
        yield url


def test_real_demo_engine_greedy_and_streamed_agree(demo_url):
    client = openai.OpenAI(base_url=demo_url + "/v1", api_key="unused", max_retries=0, timeout=120)
    model = client.models.list().data[0].id
    first = client.responses.create(model=model, input="Hello", max_output_tokens=6, temperature=0)
    assert first.status in ("completed", "incomplete") and first.model == model
    assert 1 <= first.usage.output_tokens <= 6 and first.usage.input_tokens > 10
    with client.responses.stream(model=model, input="Hello", max_output_tokens=6, temperature=0) as stream:
        events = list(stream)
    final = events[-1].response
    assert events[0].type == "response.created"
    assert events[-1].type == ("response.completed" if first.status == "completed" else "response.incomplete")
    assert final.usage.output_tokens == first.usage.output_tokens
    assert [item.model_dump(exclude={"id", "call_id"}) for item in final.output] == [
        item.model_dump(exclude={"id", "call_id"}) for item in first.output
    ]


def test_disconnect_aborts_a_non_streaming_response(base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>")
    fake.hang_after = 2
    post_then_leave(base_url, "/v1/responses", {"input": "Hi"}, lambda: len(fake.submitted) == 1)
    assert wait_until(lambda: bool(fake.aborted))
    assert len(fake.submitted) == 1 and fake.aborted == [fake.submitted[0].request_id]
