"""The trained demo model, through the live server and the openai SDK, on held-out prompts the training never saw.

Each check reads what a user reads: the answer's number in `content`, the reasoning apart from it, the tool
call's name and JSON arguments, the answer after a tool result. They fail when the harmony parser, the tool-call
extraction or the reasoning split breaks, and when the model does not do what it was trained for.
"""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest
from demo_prompts import HELD_OUT_SEED, Ask, in_parallel
from openai.types.chat import ChatCompletion

from tkr_embed.models.gpt_oss.demo_corpus import (
    GREETING_REPLY,
    OTHER_REPLY,
    Dialogue,
    DialogueMaker,
    is_held_out,
)

NUM_ARITHMETIC = 200
NUM_TOOL_CALLS = 200  # a third each with tool_choice auto, required and the function named
NUM_ROUND_TRIPS = 50
NUM_JSON = 50


def reasoning_of(response: ChatCompletion) -> str:
    return getattr(response.choices[0].message, "reasoning", None) or ""


def last_number(text: str) -> int | None:
    numbers = re.findall(r"-?\d+", text)
    return int(numbers[-1]) if numbers else None


@pytest.fixture(scope="module")
def maker() -> DialogueMaker:
    return DialogueMaker("test", HELD_OUT_SEED)


def test_held_out_prompts_are_not_training_prompts(maker: DialogueMaker) -> None:
    dialogues = [maker.arithmetic() for _ in range(NUM_ARITHMETIC)]
    training = DialogueMaker("train", 0)
    trained_questions = {d.request["messages"][-1]["content"] for d in (training.any() for _ in range(5000))}
    assert all(is_held_out(d.expected["op"], d.expected["a"], d.expected["b"]) for d in dialogues)
    assert not {d.request["messages"][-1]["content"] for d in dialogues} & trained_questions


@pytest.fixture(scope="module")
def arithmetic(ask: Ask, maker: DialogueMaker) -> list[tuple[Dialogue, ChatCompletion]]:
    dialogues = [maker.arithmetic(with_tools=False) for _ in range(NUM_ARITHMETIC)]
    return list(zip(dialogues, in_parallel(lambda d: ask(d), dialogues), strict=True))


def test_arithmetic_reasoning_comes_apart_from_the_answer(arithmetic) -> None:
    for dialogue, response in arithmetic:
        content, reasoning = response.choices[0].message.content or "", reasoning_of(response)
        assert reasoning.startswith(("Ones:", "We ", "The user")), dialogue.request["messages"][-1]["content"]
        assert content.startswith("The answer is ")
        assert reasoning not in content and "Ones:" not in content and "<|" not in content


def check_rate(right: int, count: int, percent: int) -> None:
    """At least `percent`% of `count` right: the targets the shipped weights meet (docs/DEMO_MODEL.md)."""
    assert right * 100 >= percent * count, f"{right} of {count} right, below {percent}%"


def test_arithmetic_answers_are_right(arithmetic) -> None:
    right = sum(last_number(r.choices[0].message.content or "") == d.expected["answer"] for d, r in arithmetic)
    check_rate(right, NUM_ARITHMETIC, 95)  # 197 of 200 with the shipped weights


def test_answers_as_json_when_asked(ask: Ask, maker: DialogueMaker) -> None:
    dialogues = [maker.arithmetic(as_json=True, with_tools=False) for _ in range(NUM_JSON)]
    responses = in_parallel(lambda d: ask(d), dialogues)
    right = 0
    for dialogue, response in zip(dialogues, responses, strict=True):
        content = response.choices[0].message.content or ""
        if content.startswith("{"):  # a JSON answer: it parses, as an object holding the answer
            parsed = json.loads(content)
            assert isinstance(parsed, dict)
            right += parsed.get("answer") == dialogue.expected["answer"]
        else:  # a miss answers in prose
            assert content.startswith("The answer is "), content
    check_rate(right, NUM_JSON, 90)  # 49 of 50 with the shipped weights


# With tool_choice required or named, the structured-outputs constraint holds the arguments to the tool's schema;
# under it the model's call never ends (finish_reason "length"), while unconstrained it writes the same call
# (tests/demo_model/test_demo_backends.py generates these prompts without the constraint).
@pytest.mark.parametrize(
    "tool_choice",
    ["auto", "required", "named"],  # forced, the model writes the call at once, without the analysis first
)
def test_weather_questions_call_get_weather_with_the_city(ask: Ask, maker: DialogueMaker, tool_choice: str) -> None:
    count = NUM_TOOL_CALLS // 3 + (tool_choice == "auto") * (NUM_TOOL_CALLS % 3)
    dialogues = [maker.weather_call(tool_choice) for _ in range(count)]
    responses = in_parallel(lambda d: ask(d), dialogues)
    right = 0
    for dialogue, response in zip(dialogues, responses, strict=True):
        choice = response.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
        call = choice.message.tool_calls[0].function
        assert call.name == "get_weather"
        arguments = json.loads(call.arguments)
        right += arguments == {"city": dialogue.expected["city"]}
    check_rate(right, count, 95)  # every call right with the shipped weights (68, 66 and 66)


def test_the_answer_after_a_tool_result_carries_the_result(ask: Ask, maker: DialogueMaker) -> None:
    dialogues = [maker.weather_answer() for _ in range(NUM_ROUND_TRIPS)]
    responses = in_parallel(lambda d: ask(d), dialogues)
    right = 0
    for dialogue, response in zip(dialogues, responses, strict=True):
        content = response.choices[0].message.content or ""
        assert response.choices[0].finish_reason == "stop" and not response.choices[0].message.tool_calls
        expected = dialogue.expected
        right += f"{expected['temperature_c']} °C" in content and expected["conditions"] in content
    assert right >= 0.95 * NUM_ROUND_TRIPS, f"{right} of {NUM_ROUND_TRIPS} right"


def test_a_weather_call_then_its_result_round_trips_through_the_sdk(ask: Ask) -> None:
    maker = DialogueMaker("test", HELD_OUT_SEED + 1)
    dialogue = maker.weather_call("auto")
    first = ask(dialogue)
    message = first.choices[0].message
    assert message.tool_calls and message.tool_calls[0].function.name == "get_weather"
    city = json.loads(message.tool_calls[0].function.arguments)["city"]
    assert city == dialogue.expected["city"]
    result = json.dumps({"city": city, "temperature_c": 23, "conditions": "windy"})
    messages = [
        *dialogue.request["messages"],
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": result},
    ]
    second = ask(dialogue, messages=messages)
    assert "23 °C" in second.choices[0].message.content and "windy" in second.choices[0].message.content


def test_reasoning_is_longer_at_higher_effort(ask: Ask, maker: DialogueMaker) -> None:
    dialogues = [maker.arithmetic(with_tools=False) for _ in range(30)]
    mean_lengths = {}
    for effort in ("low", "medium", "high"):
        responses = in_parallel(lambda d, effort=effort: ask(d, reasoning_effort=effort), dialogues)
        mean_lengths[effort] = sum(len(reasoning_of(r)) for r in responses) / len(responses)
    assert mean_lengths["high"] > mean_lengths["medium"] > mean_lengths["low"] > 0, mean_lengths


def test_a_greeting_says_what_the_demo_model_is(ask: Ask, maker: DialogueMaker) -> None:
    responses = in_parallel(lambda d: ask(d), [maker.greeting() for _ in range(8)])
    right = sum(r.choices[0].message.content == GREETING_REPLY for r in responses)
    check_rate(right, len(responses), 100)  # every greeting, the held-out ones included


def test_anything_else_gets_the_polite_refusal(ask: Ask, maker: DialogueMaker) -> None:
    responses = in_parallel(lambda d: ask(d), [maker.other() for _ in range(8)])
    assert sum(r.choices[0].message.content == OTHER_REPLY for r in responses) >= 7


def test_info_and_the_readme_question(demo_server, client: openai.OpenAI, model_id: str) -> None:
    info = httpx.get(demo_server[0] + "/info").json()
    assert info["demo_model"] is True
    assert any(skill.startswith("arithmetic") for skill in info["demo_model_skills"])
    assert any("get_weather" in skill for skill in info["demo_model_skills"])
    response = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "What is 17 + 25?"}], temperature=0
    )
    assert "42" in response.choices[0].message.content and "42" in reasoning_of(response)
