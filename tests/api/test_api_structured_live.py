"""Structured outputs against the real server process on the demo checkpoint (random weights), through the
openai SDK: every answer to a json_schema request parses and validates, streamed or not, at every reasoning
effort; strict, required and named tool calls give arguments that validate; what cannot be enforced is a 400.

Random weights reason at random, so the reasoning budget (half of max_tokens) is what ends their analysis: the
answers here show that the final answer always gets room and always closes its JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from server_process import ServerProcess, healthy_demo_server

MAX_TOKENS = 160
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "kind": {"enum": ["cat", "dog", "fish"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        "owner": {
            "type": "object",
            "properties": {
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
                "verified": {"type": "boolean"},
                "city": {"enum": ["Paris", "Oslo", None]},
            },
            "required": ["age", "verified", "city"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "kind", "tags", "owner"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "pet", "schema": SCHEMA, "strict": True}}
WEATHER = {
    "type": "object",
    "properties": {"city": {"enum": ["Paris", "Oslo"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Forecast", "parameters": WEATHER, "strict": True},
    },
    {"type": "function", "function": {"name": "get_time", "parameters": WEATHER}},
]


def _messages(index: int) -> list[dict]:
    return [{"role": "user", "content": f"Describe pet number {index} as JSON."}]


@pytest.fixture(scope="module")
def server(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with healthy_demo_server(demo_model_dir, tmp_path_factory.mktemp("structured")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def _create(client, model, index: int, effort: str, **sampling) -> tuple[str, str, str]:
    response = client.chat.completions.create(
        model=model,
        messages=_messages(index),
        response_format=RESPONSE_FORMAT,
        reasoning_effort=effort,
        max_tokens=MAX_TOKENS,
        **{"temperature": 0.0, **sampling},
    )
    choice = response.choices[0]
    return choice.message.content, choice.finish_reason, (choice.message.model_extra or {}).get("reasoning") or ""


def _stream(client, model, index: int, effort: str, **sampling) -> tuple[str, str, str]:
    chunks = client.chat.completions.create(
        model=model,
        messages=_messages(index),
        response_format=RESPONSE_FORMAT,
        reasoning_effort=effort,
        max_tokens=MAX_TOKENS,
        stream=True,
        **{"temperature": 0.0, **sampling},
    )
    content, reasoning, finish = [], [], None
    for chunk in chunks:
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            reasoning.append((choice.delta.model_extra or {}).get("reasoning") or "")
            finish = choice.finish_reason or finish
    return "".join(content), finish, "".join(reasoning)


def _assert_all_valid(jobs, results) -> int:
    """Every answer stopped with JSON that validates; -> how many reasoned first."""
    reasoned = 0
    for job, (content, finish, reasoning) in zip(jobs, results, strict=True):
        assert finish == "stop", (job, content)
        jsonschema.validate(json.loads(content), SCHEMA)
        reasoned += bool(reasoning)
    return reasoned


def test_two_hundred_json_schema_answers_all_parse_and_validate(client, model):
    # Greedy (different prompts give different answers): sampling sorts the whole vocabulary every step, which
    # on two shared CPU cores would make this test take many minutes; the sampled case follows.
    jobs = [
        (call, index, effort)
        for call in (_create, _stream)
        for effort in ("low", "medium", "high")
        for index in range(34 if effort != "high" else 32)
    ]
    assert len(jobs) == 200
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda job: job[0](client, model, job[1], job[2]), jobs))
    assert _assert_all_valid(jobs, results) > 0  # some reasoned (free) before the answer
    assert len({content for content, _, _ in results}) > 20


def test_sampled_json_schema_answers_validate_seeded_or_not(client, model):
    # A seeded request samples without lookahead steps, an unseeded one with them.
    jobs = [(call, index, "medium") for call in (_create, _stream) for index in range(5)]
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda job: job[0](client, model, job[1], job[2], temperature=1.0, seed=job[1] if job[1] % 2 else None),
                jobs,
            )
        )
    _assert_all_valid(jobs, results)


def test_json_object_gives_a_json_object(client, model):
    for index in range(5):
        response = client.chat.completions.create(
            model=model, messages=_messages(index), response_format={"type": "json_object"}, max_tokens=MAX_TOKENS
        )
        choice = response.choices[0]
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)
        else:  # an object of free shape may outgrow the budget; it is cut, never wrong
            assert choice.finish_reason == "length" and choice.message.content.startswith("{")


def test_an_answer_cut_by_max_tokens_ends_with_length_and_a_prefix_of_the_json(client, model):
    response = client.chat.completions.create(
        model=model, messages=_messages(1), response_format=RESPONSE_FORMAT, max_tokens=12
    )
    choice = response.choices[0]
    assert choice.finish_reason == "length"
    assert (choice.message.content or "").startswith('{"') or not choice.message.content


@pytest.mark.parametrize(
    "tool_choice",
    ["auto", "required", {"type": "function", "function": {"name": "get_weather"}}],
    ids=["strict-auto", "required", "named"],
)
def test_strict_and_forced_tool_arguments_always_validate(client, model, tool_choice):
    calls = []
    for index in range(12):
        response = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"Weather, please ({index})"}],
            tools=TOOLS,
            tool_choice=tool_choice,
            max_tokens=64,  # arguments of this schema take a dozen tokens
            seed=index,
        )
        choice = response.choices[0]
        for call in choice.message.tool_calls or []:
            calls.append(call.function.name)
            if call.function.name == "get_weather" or tool_choice != "auto":
                jsonschema.validate(json.loads(call.function.arguments), WEATHER)
                assert choice.finish_reason == "tool_calls"
        if tool_choice != "auto":
            assert choice.message.tool_calls, "a forced choice always calls"
    if isinstance(tool_choice, dict):
        assert set(calls) == {"get_weather"}
    assert calls


def _post(server: ServerProcess, body: dict) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}},
                    },
                }
            },
            "response_format.json_schema.schema",
            "not",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?=a)"}}},
                    },
                }
            },
            "response_format.json_schema.schema",
            "look-around",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "strict": True,
                            "parameters": {
                                "type": "object",
                                "properties": {"a": {"type": "string", "format": "colour"}},
                            },
                        },
                    }
                ]
            },
            "tools[0].function.parameters",
            "colour",
        ),
        ({"logit_bias": {"the": 5}}, "logit_bias", "token ids"),
        ({"logit_bias": {"100": 500}}, "logit_bias", "between -100 and 100"),
        ({"logit_bias": {"999999": 1}}, "logit_bias", "201088"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction", "not supported"),
        ({"functions": [{"name": "f"}]}, "functions", "tools"),
        ({"store": True}, "store", "not stored"),
        ({"verbosity": "high"}, "verbosity", "verbosity"),
        ({"modalities": ["text", "audio"]}, "modalities", "text"),
        ({"temprature": 0.5}, "temprature", "unknown field"),
    ],
    ids=[
        "not",
        "look-around",
        "strict-tool-format",
        "bias-key",
        "bias-value",
        "bias-id",
        "prediction",
        "functions",
        "store",
        "verbosity",
        "audio",
        "typo",
    ],
)
def test_what_would_be_ignored_or_is_wrong_is_a_400_naming_the_field(server, model, body, param, words):
    response = _post(server, {"model": model, "messages": _messages(0), "max_tokens": 4, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_harmless_fields_are_accepted(server, model):
    body = {
        "model": model,
        "messages": _messages(0),
        "max_tokens": 4,
        "user": "u-1",
        "metadata": {"team": "a"},
        "store": False,
        "parallel_tool_calls": False,
        "service_tier": "auto",
        "prompt_cache_key": "k",
        "safety_identifier": "s",
        "logit_bias": {},
        "response_format": {"type": "text"},
        "modalities": ["text"],
    }
    assert _post(server, body).status_code == 200


def test_responses_text_format_json_schema_validates_and_is_echoed(client, model):
    text_format = {"type": "json_schema", "name": "pet", "schema": SCHEMA, "strict": True}
    for index in range(6):
        response = client.responses.create(
            model=model, input=f"Pet {index} as JSON", text={"format": text_format}, max_output_tokens=MAX_TOKENS
        )
        assert response.status == "completed"
        jsonschema.validate(json.loads(response.output_text), SCHEMA)
        assert response.text.format.type == "json_schema" and response.text.format.schema_ == SCHEMA


def test_responses_text_format_that_cannot_be_enforced_is_a_400(server, model):
    bad = {"type": "object", "properties": {"a": {"not": {}}}}
    body = {"model": model, "input": "x", "text": {"format": {"type": "json_schema", "name": "x", "schema": bad}}}
    response = httpx.post(server.url + "/v1/responses", json=body, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "text.format.schema"


def test_native_generate_chat_and_stream_follow_json_schema(server):
    for index in range(4):
        body = {"text": f"Pet {index}", "json_schema": SCHEMA, "max_tokens": MAX_TOKENS, "seed": index}
        answer = httpx.post(server.url + "/generate", json=body, timeout=120).json()
        assert answer["finish_reason"] == "stop"
        jsonschema.validate(json.loads(answer["text"]), SCHEMA)
    chat = {"messages": [{"role": "user", "content": "A pet"}], "json_schema": SCHEMA, "max_tokens": MAX_TOKENS}
    answer = httpx.post(server.url + "/chat", json=chat, timeout=120).json()
    jsonschema.validate(json.loads(answer["text"]), SCHEMA)
    deltas = []
    with httpx.stream("POST", server.url + "/stream", json={**body, "seed": 99}, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                deltas.append(json.loads(line[6:])["chunk"]["delta"])
    jsonschema.validate(json.loads("".join(deltas)), SCHEMA)


def test_native_json_schema_that_cannot_be_enforced_is_a_400(server):
    body = {"text": "x", "json_schema": {"type": "object", "properties": {"a": {"not": {}}}}}
    response = httpx.post(server.url + "/generate", json=body, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "json_schema" and "not" in response.json()["error"]["message"]


def test_the_load_generator_asks_for_the_schema_it_is_given(server, model, tmp_path, capsys):
    from bench_support import load_bench_module

    schema_file = tmp_path / "pet.json"
    schema_file.write_text(json.dumps(SCHEMA))
    module = load_bench_module("load_generator")
    argv = ["--url", server.url, "--model", model, "--concurrency", "2", "--requests", "4", "--max-tokens", "64"]
    assert module.main([*argv, "--json-schema", str(schema_file)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["json_schema"] == str(schema_file)
    assert report["succeeded"] == 4 and report["errors"] == []


def test_logit_bias_bans_and_forces_tokens(server, model):
    apple, pear = 30366, 44632  # " apple", " pear"

    def complete(bias: dict[str, float], **sampling) -> str:
        body = {"model": model, "prompt": [1000, 2000, 3000], "max_tokens": 6, "ignore_eos": True, "logit_bias": bias}
        response = httpx.post(server.url + "/v1/completions", json={**body, **sampling}, timeout=60)
        return response.json()["choices"][0]["text"]

    assert complete({str(apple): 100, str(pear): 90}, temperature=0.0) == " apple" * 6
    assert complete({str(apple): -100, str(pear): 90}, temperature=1.0, seed=3) == " pear" * 6  # banned
    assert " apple" not in complete({str(apple): -100}, temperature=1.0, seed=4)
