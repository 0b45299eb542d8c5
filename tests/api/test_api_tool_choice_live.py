"""tool_choice "required" and named against the real server process on the demo checkpoint (random weights), with
the openai SDK: every answer calls a declared tool, and no harmony header text reaches the answer, streamed or not.

Random weights never close the arguments within a few tokens, so an answer ends with "length" (the arguments
are cut, as OpenAI reports it) or, if the model ends the call itself, with "tool_calls"; never "stop".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from server_process import ServerProcess, healthy_demo_server

MAX_TOKENS = 8  # the longest declared recipient's header is 6 tokens: the arguments start within the budget
HEADER_TEXT = re.compile(r"to=|functions\.|<\||commentary|assistant")
SEEDS = list(range(20))  # the reported case is seed 7


def _tool(name: str, description: str) -> dict:
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


ONE_TOOL = [_tool("get_weather", "Current weather of a city")]
THREE_TOOLS = [*ONE_TOOL, _tool("get_time", "Local time in a city"), _tool("lookup", "Facts about a city")]
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


def _names(tools: list[dict]) -> set[str]:
    return {tool["function"]["name"] for tool in tools}


def _responses_tools(tools: list[dict]) -> list[dict]:
    return [{"type": "function", **tool["function"]} for tool in tools]


@pytest.fixture(scope="module")
def server(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with healthy_demo_server(demo_model_dir, tmp_path_factory.mktemp("tool-choice")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def _assert_one_declared_call(name: str, arguments: str, text: str, finish_reason: str, declared: set) -> None:
    """`text`: the content and reasoning the answer carries beside the call."""
    assert name in declared
    assert not HEADER_TEXT.search(arguments), arguments
    assert not HEADER_TEXT.search(text), text
    assert finish_reason in ("tool_calls", "length")


@pytest.mark.parametrize("tools", [ONE_TOOL, THREE_TOOLS], ids=["1-tool", "3-tools"])
def test_required_always_calls_a_declared_tool(client, model, tools):
    called = set()
    for seed in SEEDS:
        response = client.chat.completions.create(
            model=model, messages=MESSAGES, tools=tools, tool_choice="required", seed=seed, max_tokens=MAX_TOKENS
        )
        choice = response.choices[0]
        [call] = choice.message.tool_calls
        text = (choice.message.content or "") + ((choice.message.model_extra or {}).get("reasoning") or "")
        _assert_one_declared_call(
            call.function.name, call.function.arguments, text, choice.finish_reason, _names(tools)
        )
        called.add(call.function.name)
    if len(tools) > 1:
        assert len(called) > 1  # the model picks among the tools; the constraint does not pick for it


@pytest.mark.parametrize("tools", [ONE_TOOL, THREE_TOOLS], ids=["1-tool", "3-tools"])
def test_required_streams_a_declared_call_and_no_header_text(client, model, tools):
    for seed in SEEDS[:10]:
        chunks = list(
            client.chat.completions.create(
                model=model,
                messages=MESSAGES,
                tools=tools,
                tool_choice="required",
                seed=seed,
                max_tokens=MAX_TOKENS,
                stream=True,
            )
        )
        deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
        calls = [call for delta in deltas for call in delta.tool_calls or []]
        assert {call.index for call in calls} == {0}
        name = "".join(call.function.name or "" for call in calls)
        arguments = "".join(call.function.arguments or "" for call in calls)
        text = "".join((delta.content or "") + ((delta.model_extra or {}).get("reasoning") or "") for delta in deltas)
        finish = [
            chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason
        ]
        _assert_one_declared_call(name, arguments, text, finish[-1], _names(tools))
        assert calls[0].id and calls[0].type == "function"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_named_calls_the_named_tool(client, model, stream):
    for seed in SEEDS[:5]:
        response = client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            tools=THREE_TOOLS,
            tool_choice={"type": "function", "function": {"name": "lookup"}},
            seed=seed,
            max_tokens=MAX_TOKENS,
            stream=stream,
        )
        if stream:
            deltas = [chunk.choices[0].delta for chunk in response if chunk.choices]
            calls = [call for delta in deltas for call in delta.tool_calls or []]
            name = "".join(call.function.name or "" for call in calls)
            content = "".join(delta.content or "" for delta in deltas)
        else:
            calls = response.choices[0].message.tool_calls
            name, content = calls[0].function.name, response.choices[0].message.content
        assert name == "lookup"
        assert not content or not HEADER_TEXT.search(content), content


def _assert_response_calls_a_declared_tool(output: list, declared: set) -> None:
    calls = [item for item in output if item.type == "function_call"]
    assert calls and calls[0].name in declared
    for item in output:
        if item.type == "message":
            text = "".join(part.text for part in item.content)
            assert not HEADER_TEXT.search(text), text
        if item.type == "reasoning":
            text = "".join(part.text for part in item.content or [])
            assert not HEADER_TEXT.search(text), text


@pytest.mark.parametrize("tools", [ONE_TOOL, THREE_TOOLS], ids=["1-tool", "3-tools"])
def test_responses_required_always_gives_a_declared_function_call(client, model, tools):
    declared = _names(tools)
    for _ in range(8):  # the Responses API takes no seed: these are eight random draws
        response = client.responses.create(
            model=model,
            input="What is the weather in Paris?",
            tools=_responses_tools(tools),
            tool_choice="required",
            max_output_tokens=MAX_TOKENS,
        )
        _assert_response_calls_a_declared_tool(response.output, declared)
    for _ in range(4):
        events = list(
            client.responses.create(
                model=model,
                input="What is the weather in Paris?",
                tools=_responses_tools(tools),
                tool_choice="required",
                max_output_tokens=MAX_TOKENS,
                stream=True,
            )
        )
        final = events[-1].response
        _assert_response_calls_a_declared_tool(final.output, declared)
        added = [event.item for event in events if event.type == "response.output_item.added"]
        assert added[0].type == "function_call" and added[0].name in declared


def test_responses_named_calls_the_named_tool(client, model):
    response = client.responses.create(
        model=model,
        input="What is the weather in Paris?",
        tools=_responses_tools(THREE_TOOLS),
        tool_choice={"type": "function", "name": "get_time"},
        max_output_tokens=MAX_TOKENS,
    )
    assert [item.name for item in response.output if item.type == "function_call"] == ["get_time"]
