"""The Open Responses compliance cases (openresponses/openresponses: bin/compliance-test.ts runs the templates of
src/lib/compliance-tests.ts), re-expressed in Python, and the spec's own types (the `openresponses-types` package)
as the judge of every response object and stream event that /v1/responses sends.

Each case posts a request and checks the response object against the spec's `ResponseResource`; a streamed
case also checks every event against the spec's event of that type. What the model must say (status
`completed`, a `function_call` item) is checked by each case's `expects`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import openresponses_types as spec
from pydantic import BaseModel

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}},
        "required": ["location"],
    },
}
WEATHER_QUESTION = [{"type": "message", "role": "user", "content": "What's the weather like in San Francisco?"}]
# A 1x1 PNG: a text-only model refuses any image, whatever it shows.
PNG_DATA_URL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
PDF_DATA_URL = "data:application/pdf;base64,JVBERi0xLjEKJSVFT0YK"


@dataclass(frozen=True)
class Case:
    """One compliance case: its request and what the response must show (`has_output`: at least one output item;
    `completed`: status completed; `output_type`: an item of that type)."""

    id: str
    body: dict[str, Any]
    stream: bool = False
    has_output: bool = True
    completed: bool = True
    output_type: str | None = None


CASES = [
    Case(
        "basic-response",
        {"input": [{"type": "message", "role": "user", "content": "Say hello in exactly 3 words."}]},
    ),
    Case(
        "streaming-response",
        {"input": [{"type": "message", "role": "user", "content": "Count from 1 to 5."}]},
        stream=True,
    ),
    Case(
        "system-prompt",
        {
            "input": [
                {"type": "message", "role": "system", "content": "You are a pirate. Always respond in pirate speak."},
                {"type": "message", "role": "user", "content": "Say hello."},
            ]
        },
    ),
    Case(
        "tool-calling",
        {"input": WEATHER_QUESTION, "tools": [WEATHER_TOOL]},
        completed=False,
        output_type="function_call",
    ),
    Case(
        "tool-calling-streaming",
        {"input": WEATHER_QUESTION, "tools": [WEATHER_TOOL]},
        stream=True,
        completed=False,
        output_type="function_call",
    ),
    Case(
        "multi-turn",
        {
            "input": [
                {"type": "message", "role": "user", "content": "My name is Alice."},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": "Hello Alice! Nice to meet you. How can I help you today?",
                },
                {"type": "message", "role": "user", "content": "What is my name?"},
            ]
        },
    ),
]
CASE_IDS = [case.id for case in CASES]

# Requests a text-only, stateless server refuses: a clear 400 naming the field is the right answer.
REFUSED = {
    "image-input": (
        {
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What do you see in this image? Answer in one sentence."},
                        {"type": "input_image", "image_url": PNG_DATA_URL},
                    ],
                }
            ]
        },
        "input[0].content[1]",
    ),
    "file-input": (
        {
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Read the attached file and answer with its title only."},
                        {"type": "input_file", "filename": "fixture.pdf", "file_data": PDF_DATA_URL},
                    ],
                }
            ]
        },
        "input[0].content[1]",
    ),
    "file-search": (
        {"input": "Search the vector store.", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]},
        "tools[0].type",
    ),
    "offline-web-search": (
        {"input": "Find a cached result.", "tools": [{"type": "web_search", "external_web_access": False}]},
        "tools[0].type",
    ),
}

# The spec's model of each event type we send. The types package (spec of 2026-04-24) names the reasoning text
# events `response.reasoning.delta/.done`; OpenAI, the openai SDK and gpt-oss's own reference name them
# `response.reasoning_text.delta/.done`, which we send. Their fields are the same, and are checked here.
SPEC_EVENTS: dict[str, type[BaseModel]] = {
    "response.created": spec.ResponseCreatedStreamingEvent,
    "response.in_progress": spec.ResponseInProgressStreamingEvent,
    "response.completed": spec.ResponseCompletedStreamingEvent,
    "response.incomplete": spec.ResponseIncompleteStreamingEvent,
    "response.failed": spec.ResponseFailedStreamingEvent,
    "response.output_item.added": spec.ResponseOutputItemAddedStreamingEvent,
    "response.output_item.done": spec.ResponseOutputItemDoneStreamingEvent,
    "response.content_part.added": spec.ResponseContentPartAddedStreamingEvent,
    "response.content_part.done": spec.ResponseContentPartDoneStreamingEvent,
    "response.output_text.delta": spec.ResponseOutputTextDeltaStreamingEvent,
    "response.output_text.done": spec.ResponseOutputTextDoneStreamingEvent,
    "response.reasoning_text.delta": spec.ResponseReasoningDeltaStreamingEvent,
    "response.reasoning_text.done": spec.ResponseReasoningDoneStreamingEvent,
    "response.function_call_arguments.delta": spec.ResponseFunctionCallArgumentsDeltaStreamingEvent,
    "response.function_call_arguments.done": spec.ResponseFunctionCallArgumentsDoneStreamingEvent,
    "error": spec.ErrorStreamingEvent,
}
SPEC_TYPE_NAMES = {
    "response.reasoning_text.delta": "response.reasoning.delta",
    "response.reasoning_text.done": "response.reasoning.done",
}
TERMINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")


def spec_response(data: dict[str, Any]) -> spec.ResponseResource:
    """The response object as the spec reads it; raises pydantic's ValidationError naming each missing field."""
    return spec.ResponseResource.model_validate(data)


def spec_event(data: dict[str, Any]) -> BaseModel:
    kind = data["type"]
    assert kind in SPEC_EVENTS, f"an event type the spec does not define: {kind}"
    return SPEC_EVENTS[kind].model_validate({**data, "type": SPEC_TYPE_NAMES.get(kind, kind)})


def post(base_url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(base_url + "/v1/responses", json=body, timeout=120)


def stream_events(base_url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream's events as sent: each block is `event: <type>` and `data: <json>` with the same type."""
    with httpx.stream("POST", base_url + "/v1/responses", json={**body, "stream": True}, timeout=120) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_bytes()).decode()
    events = []
    for block in filter(None, raw.split("\n\n")):
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), block
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name_line.removeprefix("event: ")
        events.append(data)
    return events


def check_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Every event is the spec's; the stream is ordered and consistent. Returns the final response object."""
    for event in events:
        spec_event(event)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert [event["type"] for event in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] in TERMINAL_EVENTS
    assert not any(event["type"] in TERMINAL_EVENTS for event in events[:-1])
    final = events[-1]["response"]
    # Every response object of the stream carries the same fields.
    assert all(set(event["response"]) == set(final) for event in events if "response" in event)
    added = {e["output_index"]: e["item"] for e in events if e["type"] == "response.output_item.added"}
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert sorted(added) == list(range(len(final["output"])))
    assert done == final["output"]
    texts: dict[tuple[int, str], list[str]] = {}
    for event in events:
        if "item_id" in event:
            assert event["item_id"] == added[event["output_index"]]["id"], event
        if event["type"].endswith(".delta"):
            texts.setdefault((event["output_index"], event["type"]), []).append(event["delta"])
    for event in events:
        if event["type"] in ("response.output_text.done", "response.reasoning_text.done"):
            delta_type = event["type"].replace(".done", ".delta")
            assert event["text"] == "".join(texts.get((event["output_index"], delta_type), []))
        if event["type"] == "response.function_call_arguments.done":
            deltas = texts.get((event["output_index"], "response.function_call_arguments.delta"), [])
            assert event["arguments"] == "".join(deltas)
    return final


def check_case(case: Case, response: dict[str, Any]) -> None:
    """The case's own checks of what the model answered."""
    if case.has_output:
        assert response["output"], "the response has no output items"
    if case.completed:
        assert response["status"] == "completed", response["status"]
    if case.output_type is not None:
        assert case.output_type in [item["type"] for item in response["output"]]
