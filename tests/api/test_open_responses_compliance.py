"""The Open Responses compliance cases (tests/api/open_responses.py) against the real server, as its own process,
on the demo checkpoint: every response object and every stream event, whatever the model writes, is the spec's
and parses with the openai SDK, and a streamed response equals the JSON one for the same seeded request.

The demo checkpoint has random weights: it writes noise until its token budget runs out, so every request here
carries a small `max_output_tokens` and a `seed` (for a reproducible run), and the checks of what a trained model
says (status `completed`, a call under tool_choice "auto") are made over a scripted model in
test_open_responses_scripted.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from open_responses import (
    CASE_IDS,
    CASES,
    WEATHER_QUESTION,
    WEATHER_TOOL,
    check_stream,
    post,
    spec_response,
    stream_events,
)
from server_process import demo_env, free_port, server_process

BUDGET = {"max_output_tokens": 8, "seed": 3}


@pytest.fixture(scope="module")
def demo_url(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("open-responses")
    port = free_port()
    with server_process(workdir, demo_env(demo_model_dir, workdir / "data", port), port) as server:
        server.wait_healthy()
        yield server.url


@pytest.fixture(scope="module")
def client(demo_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=demo_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def check_ended_by_the_budget_or_the_model(response: dict[str, Any]) -> None:
    assert response["status"] in ("completed", "incomplete")
    if response["status"] == "incomplete":
        assert response["incomplete_details"] == {"reason": "max_output_tokens"}
        assert response["completed_at"] is None
    else:
        assert response["completed_at"] >= response["created_at"]
    assert 1 <= response["usage"]["output_tokens"] <= BUDGET["max_output_tokens"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_compliance_case_on_the_demo_checkpoint(case, stream, demo_url):
    """Each case both ways: the JSON answer is the spec's ResponseResource; each stream event is the spec's event."""
    body = {**case.body, **BUDGET}
    if stream:
        events = stream_events(demo_url, body)
        response = check_stream(events)
        assert events[-1]["type"] == f"response.{response['status']}"
    else:
        answer = post(demo_url, body)
        assert answer.status_code == 200, answer.text
        response = answer.json()
    spec_response(response)
    check_ended_by_the_budget_or_the_model(response)
    assert response["output"], "the demo model wrote nothing the response shows"


def test_function_call_round_trip_on_the_demo_checkpoint(demo_url):
    """A named tool_choice forces the call's header, so even random weights make a function_call item; its output
    goes back with the history (stateless: no previous_response_id)."""
    named = {"type": "function", "name": "get_weather"}
    first = post(demo_url, {"input": WEATHER_QUESTION, "tools": [WEATHER_TOOL], "tool_choice": named, **BUDGET})
    assert first.status_code == 200, first.text
    spec_response(first.json())
    calls = [item for item in first.json()["output"] if item["type"] == "function_call"]
    assert [call["name"] for call in calls] == ["get_weather"]
    output = {"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "64 degrees and clear"}
    history = [*WEATHER_QUESTION, *first.json()["output"], output]
    second = post(demo_url, {"input": history, "tools": [WEATHER_TOOL], **BUDGET})
    assert second.status_code == 200, second.text
    spec_response(second.json())
    check_ended_by_the_budget_or_the_model(second.json())


SETTINGS: dict[str, Any] = {
    "input": "What's the weather like in San Francisco?",
    "instructions": "Answer briefly.",
    "max_output_tokens": 8,
    "temperature": 0.9,
    "top_p": 0.95,
    "top_logprobs": 2,
    "include": ["message.output_text.logprobs"],
    "tools": [WEATHER_TOOL],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "max_tool_calls": 1,
    "truncation": "disabled",
    "text": {"format": {"type": "text"}},
    "reasoning": {"effort": "low", "summary": "auto"},
    "store": False,
    "metadata": {"run": "7"},
    "service_tier": "auto",
    "safety_identifier": "user-7",
    "prompt_cache_key": "compliance",
    "user": "tester",
    # Fields the SDK's create() has no argument for: the penalties (the response object has them) and seed.
    "extra_body": {"presence_penalty": 0.5, "frequency_penalty": 0.25, "seed": 7},
}
# What differs between two runs of one request: ids, times, and the prompt tokens the second run finds cached.
PER_RUN = {"id", "created_at", "completed_at"}


def near(value: Any) -> Any:
    """`value` with each float compared to 1e-4: a prompt prefilled after a prefix-cache hit differs from a full
    prefill in the last bits of float32 (same tokens, logprobs 1e-6 apart)."""
    if isinstance(value, float):
        return pytest.approx(value, abs=1e-4)
    if isinstance(value, list):
        return [near(item) for item in value]
    if isinstance(value, dict):
        return {key: near(item) for key, item in value.items()}
    return value


def comparable(response: openai.types.responses.Response) -> dict[str, Any]:
    data = response.model_dump(mode="json", exclude=PER_RUN)
    data["output"] = [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in data["output"]]
    del data["usage"]["input_tokens_details"]["cached_tokens"]
    return data


def test_the_sdk_reads_the_same_response_streamed_and_not(client):
    model = client.models.list().data[0].id
    plain = client.responses.create(model=model, **SETTINGS)
    events = list(client.responses.create(model=model, stream=True, **SETTINGS))
    final = events[-1].response
    assert events[-1].type == f"response.{plain.status}"
    assert comparable(final) == near(comparable(plain))
    assert plain.output and plain.usage.output_tokens == final.usage.output_tokens
    # The settings as applied, echoed by both.
    for response in (plain, final, events[0].response):
        assert (response.temperature, response.top_p) == (0.9, 0.95)
        assert (response.presence_penalty, response.frequency_penalty, response.top_logprobs) == (0.5, 0.25, 2)
        assert (response.max_output_tokens, response.max_tool_calls, response.parallel_tool_calls) == (8, 1, False)
        assert (response.instructions, response.metadata, response.user) == ("Answer briefly.", {"run": "7"}, "tester")
        assert (response.safety_identifier, response.prompt_cache_key) == ("user-7", "compliance")
        assert (response.service_tier, response.truncation, response.store) == ("default", "disabled", False)
        assert (response.reasoning.effort, response.reasoning.summary) == ("low", "auto")
        assert response.tools[0].name == "get_weather" and response.tool_choice == "auto"
    assert events[0].response.status == "in_progress" and events[0].response.usage is None
    # The answer's tokens carry their logprobs, two alternatives each, in both.
    texts = [part for item in plain.output if item.type == "message" for part in item.content]
    for part in texts:
        assert "".join(entry.token for entry in part.logprobs) == part.text
        assert all(len(entry.top_logprobs) == 2 for entry in part.logprobs)
