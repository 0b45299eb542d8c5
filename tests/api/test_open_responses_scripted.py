"""The Open Responses compliance cases (tests/api/open_responses.py) as the spec writes them, over a scripted model
that answers as a trained one would: each case's own checks hold (status completed, a function_call item), and
every response object and stream event is the spec's. Also: the request's settings reach the engine, logprobs,
and the terminal events of an interrupted and of a failed stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest
from fake_engine import FakeEngine
from live_server import live_server
from open_responses import (
    CASE_IDS,
    CASES,
    REFUSED,
    WEATHER_QUESTION,
    WEATHER_TOOL,
    Case,
    check_case,
    check_stream,
    post,
    spec_event,
    spec_response,
    stream_events,
)

from tkr_embed.api.server import create_app
from tkr_embed.config import Settings
from tkr_embed.engine.errors import EngineDeadError
from tkr_embed.engine.outputs import RequestOutput
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.harmony.tokenizer import get_tokenizer

ANSWER = (
    "<|channel|>analysis<|message|>A greeting.<|end|><|start|>assistant<|channel|>final"
    "<|message|>Hello there, friend!<|return|>"
)
CALL = (
    "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary "
    'to=functions.get_weather <|constrain|>json<|message|>{"location": "San Francisco, CA"}<|call|>'
)


def script_for(case: Case) -> str:
    return CALL if case.output_type == "function_call" else ANSWER


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_compliance_case(case, base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony(script_for(case))
    if case.stream:
        response = check_stream(stream_events(base_url, case.body))
    else:
        answer = post(base_url, case.body)
        assert answer.status_code == 200, answer.text
        response = answer.json()
    spec_response(response)
    check_case(case, response)
    assert response["completed_at"] >= response["created_at"] and response["error"] is None


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_streamed_and_json_responses_carry_the_same_fields(case, base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony(script_for(case))
    answer = post(base_url, case.body).json()
    events = stream_events(base_url, case.body)
    for event in events:
        if "response" in event:
            assert list(event["response"]) == list(answer)
    final = events[-1]["response"]
    ignored = {"id", "created_at", "completed_at", "output"}
    assert {k: v for k, v in final.items() if k not in ignored} == {k: v for k, v in answer.items() if k not in ignored}
    without_ids = [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in final["output"]]
    assert without_ids == [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in answer["output"]]


@pytest.mark.parametrize("case_id", sorted(REFUSED))
def test_inputs_and_tools_a_text_only_stateless_server_lacks_are_a_clear_400(case_id, base_url, fake):
    body, param = REFUSED[case_id]
    answer = post(base_url, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param and answer.json()["error"]["type"] == "invalid_request_error"
    assert fake.submitted == []


def test_function_call_round_trip(base_url, fake, harmony, tokenizer):
    """The case sends the call's output with previous_response_id; without a database (this app has no gateway) the
    history is sent back instead (tests/gateway/test_gateway_stored_responses.py continues by id)."""
    fake.script = lambda prompt, params: harmony(CALL)
    first = post(
        base_url,
        {
            "input": WEATHER_QUESTION,
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "name": "get_weather"},
        },
    ).json()
    spec_response(first)
    call = next(item for item in first["output"] if item["type"] == "function_call")
    fake.script = lambda prompt, params: harmony("<|channel|>final<|message|>It is 64 degrees and clear.<|return|>")
    history = [*WEATHER_QUESTION, *first["output"]]
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "64 degrees and clear"}
    second = post(base_url, {"input": [*history, output], "tools": [WEATHER_TOOL]}).json()
    spec_response(second)
    check_case(Case("function-call-roundtrip", {}), second)
    assert second["output"][-1]["content"][0]["text"] == "It is 64 degrees and clear."
    assert "64 degrees and clear<|end|>" in tokenizer.decode(fake.submitted[1].prompt_token_ids)


ECHOED = {
    "instructions": "Answer briefly.",
    "max_output_tokens": 64,
    "temperature": 0.7,
    "top_p": 0.9,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.25,
    "top_logprobs": 2,
    "tools": [WEATHER_TOOL],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "max_tool_calls": 1,
    "truncation": "disabled",
    "text": {"format": {"type": "text"}},
    "reasoning": {"effort": "low", "summary": "auto"},
    "store": False,
    "metadata": {"run": "7"},
    "safety_identifier": "user-7",
    "prompt_cache_key": "compliance",
    "user": "tester",
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_settings_reach_the_engine_and_are_echoed(stream, base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony(ANSWER)
    body = {"input": "Hi", **ECHOED, "service_tier": "auto", "seed": 7}
    response = check_stream(stream_events(base_url, body)) if stream else post(base_url, body).json()
    spec_response(response)
    params: SamplingParams = fake.submitted[0].params
    assert (params.temperature, params.top_p, params.max_tokens) == (0.7, 0.9, 64)
    assert (params.presence_penalty, params.frequency_penalty, params.seed, params.logprobs) == (0.5, -0.25, 7, 2)
    tools = [{**WEATHER_TOOL, "strict": None}]
    assert {key: response[key] for key in ECHOED} == {
        **ECHOED,
        "tools": tools,
        "reasoning": {"effort": "low", "summary": "auto"},
    }
    assert response["service_tier"] == "default" and response["previous_response_id"] is None


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_output_text_logprobs(stream, base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony(ANSWER)
    body = {"input": "Hi", "include": ["message.output_text.logprobs"], "top_logprobs": 1}
    if stream:
        events = stream_events(base_url, body)
        response = check_stream(events)
        deltas = [e for e in events if e["type"] == "response.output_text.delta"]
        assert all(len(e["logprobs"]) == 1 for e in deltas)  # the fake writes one token per delta
        done = next(e for e in events if e["type"] == "response.output_text.done")
        assert done["logprobs"] == [e["logprobs"][0] for e in deltas]
    else:
        response = post(base_url, body).json()
    spec_response(response)
    part = response["output"][-1]["content"][0]
    assert "".join(entry["token"] for entry in part["logprobs"]) == part["text"] == "Hello there, friend!"
    assert all(entry["logprob"] == -0.5 and len(entry["top_logprobs"]) == 1 for entry in part["logprobs"])
    assert all(bytes(entry["bytes"]).decode() == entry["token"] for entry in part["logprobs"])
    reasoning = response["output"][0]
    assert reasoning["type"] == "reasoning" and reasoning["content"][0]["text"] == "A greeting."


def test_without_logprobs_asked_none_are_computed(base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony(ANSWER)
    response = post(base_url, {"input": "Hi"}).json()
    assert fake.submitted[0].params.logprobs is None and response["top_logprobs"] == 0
    assert response["output"][-1]["content"][0]["logprobs"] == []


def test_a_stream_the_server_stopped_ends_incomplete_and_interrupted(base_url, fake, harmony):
    fake.script = lambda prompt, params: harmony(ANSWER)
    fake.abort_after = 12
    events = stream_events(base_url, {"input": "Hi"})
    final = check_stream(events)
    assert events[-1]["type"] == "response.incomplete" and final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "interrupted"} and final["completed_at"] is None
    spec_response(final)


class DyingEngine(FakeEngine):
    """The scripted engine, whose process dies after its fifth update (inside the reasoning)."""

    def generate(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams):
        return self._die_after(super().generate(request_id, prompt_token_ids, params))

    async def _die_after(self, updates: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestOutput]:
        count = 0
        async for update in updates:
            yield update
            count += 1
            if count == 5:
                raise EngineDeadError("the engine process died")


@pytest.fixture(scope="module")
def dying_server(tmp_path_factory: pytest.TempPathFactory, harmony) -> Iterator[str]:
    tokenizer = get_tokenizer()
    engine = DyingEngine(decode=tokenizer.decode)
    engine.script = lambda prompt, params: harmony(ANSWER)
    settings = Settings(storage={"data_dir": str(tmp_path_factory.mktemp("dying"))})
    with live_server(create_app(settings, engine, tokenizer=tokenizer, model_path="/models/fake")) as url:
        yield url


def test_a_stream_the_engine_fails_ends_with_response_failed_then_error(dying_server):
    events = stream_events(dying_server, {"input": "Hi"})
    failed, error = events[-2], events[-1]
    assert failed["type"] == "response.failed" and error["type"] == "error"
    assert failed["response"]["status"] == "failed" and failed["response"]["completed_at"] is None
    assert failed["response"]["error"] == {"code": "engine_unavailable", "message": "the engine process died"}
    assert [item["status"] for item in failed["response"]["output"]] == ["incomplete"]
    assert error["sequence_number"] == failed["sequence_number"] + 1
    assert (error["code"], error["message"]) == ("engine_unavailable", "the engine process died")
    assert error["error"] == {
        "type": "server_error",
        "code": "engine_unavailable",
        "message": "the engine process died",
        "param": None,
    }
    check_stream(events[:-1])
    spec_event(error)


def test_the_sdk_gets_the_failed_response_then_raises_the_error(dying_server):
    client = openai.OpenAI(base_url=dying_server + "/v1", api_key="unused", max_retries=0)
    seen = []
    with pytest.raises(openai.APIError, match="the engine process died"):
        for event in client.responses.create(model="gpt-oss-fake", input="Hi", stream=True):
            seen.append(event)
    assert seen[-1].type == "response.failed" and seen[-1].response.error.code == "engine_unavailable"
