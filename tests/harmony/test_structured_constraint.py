"""Structured outputs at the token level: any walk the constraint allows, with the reasoning free, parses into
a final answer (or tool arguments) that validates against the schema."""

from __future__ import annotations

import dataclasses
import json
import pickle
import random

import jsonschema
import pytest
from mask_ids import allowed_ids

from tkr_embed.engine.constraints import FREE_FOREVER, advance_states
from tkr_embed.harmony import special_tokens as special
from tkr_embed.harmony.parser import HarmonyStreamParser
from tkr_embed.harmony.render import render_chat
from tkr_embed.harmony.structured_constraint import with_reasoning_budget
from tkr_embed.harmony.tokenizer import get_encoding
from tkr_embed.harmony.types import ChatMessage, FunctionTool, ResponseFormat, ToolChoice
from tkr_embed.structured.schema import compile_schema

HI = [ChatMessage("user", "Hi")]
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "kind": {"enum": ["cat", "dog", "fish"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "owner": {
            "type": "object",
            "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 120}, "ok": {"type": "boolean"}},
            "required": ["age", "ok"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "kind", "tags", "owner"],
    "additionalProperties": False,
}
TEXT_IDS = get_encoding().encode(" the quick brown fox jumps over a lazy dog, 42 times!", disallowed_special=())


def walk(constraint, rng: random.Random, max_tokens: int = 400, end_chance: float = 0.05) -> list[int]:
    """What a model might write: free tokens are text (now and then <|end|>), restricted ones a random pick."""
    state = constraint.start()
    generated: list[int] = []
    while len(generated) < max_tokens:
        free = state.free_tokens_ahead()
        if free >= FREE_FOREVER:
            break
        if free > 0:
            token = special.END if rng.random() < end_chance else rng.choice(TEXT_IDS)
        else:
            ids = allowed_ids(state)
            assert ids, "the constraint always allows something"
            # prefer short tokens sometimes so strings and arrays end, as a model would
            token = rng.choice(ids)
        generated.append(token)
        advance_states([(state, token)])
        if token in special.STOP_TOKEN_IDS:
            break
    return generated


def parse(prompt, generated):
    parser = HarmonyStreamParser(prompt.forced_prefix)
    for token_id in generated:
        parser.feed(token_id)
    return parser.result()


def test_every_walk_ends_in_a_final_answer_that_validates():
    rf = ResponseFormat("pet", compile_schema(SCHEMA).grammar, SCHEMA)
    prompt = render_chat(HI, response_format=rf)
    constraint = with_reasoning_budget(prompt.constraint, 120)
    rng = random.Random(1)
    reasoned = 0
    for _ in range(40):
        generated = walk(constraint, rng)
        assert generated[-1] == special.RETURN
        result = parse(prompt, generated)
        jsonschema.validate(json.loads(result.content), SCHEMA)
        reasoned += bool(result.reasoning)
    assert reasoned > 10  # the analysis ran free before the answer in many walks


def test_the_reasoning_budget_ends_the_analysis_and_opens_the_final_answer():
    rf = ResponseFormat("pet", compile_schema(SCHEMA).grammar, SCHEMA)
    constraint = with_reasoning_budget(render_chat(HI, response_format=rf).constraint, 20)
    state = constraint.start()
    for token in get_encoding().encode("<|channel|>analysis<|message|>", allowed_special="all"):
        assert token in allowed_ids(state)
        state.advance(token)
    free_counts = []
    for _ in range(10):  # half of max_tokens 20
        free_counts.append(state.free_tokens_ahead())
        state.advance(TEXT_IDS[1])
    assert free_counts == [2] * 9 + [1]  # the lookahead stops one token before the forced end
    forced = get_encoding().encode("<|end|><|start|>assistant<|channel|>final<|message|>", allowed_special="all")
    for token in forced:
        assert state.free_tokens_ahead() == 0 and allowed_ids(state) == [token]
        state.advance(token)
    opening = {get_encoding().decode([token]) for token in allowed_ids(state)}
    assert '{"' in opening and all(text.startswith("{") for text in opening)  # the answer opens the object


def test_strict_tool_arguments_validate_and_the_call_ends_with_call():
    params = {
        "type": "object",
        "properties": {"city": {"enum": ["Paris", "Oslo"]}, "days": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    grammar = compile_schema(params).grammar
    tools = [FunctionTool("get_weather", "Weather", params, grammar), FunctionTool("noop")]
    rng = random.Random(2)
    for choice in (ToolChoice("required"), ToolChoice("function", "get_weather"), None):
        prompt = render_chat(HI, tools=tools, tool_choice=choice)
        constraint = with_reasoning_budget(prompt.constraint, 200)
        calls = []
        for _ in range(30):
            generated = walk(constraint, rng)
            result = parse(prompt, generated)
            if choice is not None:
                assert result.tool_calls, "a forced choice always calls"
            for call in result.tool_calls:
                calls.append(call.name)
                if call.name == "get_weather":
                    jsonschema.validate(json.loads(call.arguments), params)
                    assert generated[-1] == special.CALL
        assert "get_weather" in calls
        if choice == ToolChoice("function", "get_weather"):
            assert set(calls) == {"get_weather"}


def test_the_structured_constraint_pickles_and_serialises_by_value():
    rf = ResponseFormat("pet", compile_schema(SCHEMA).grammar, SCHEMA)
    constraint = with_reasoning_budget(render_chat(HI, response_format=rf).constraint, 64)
    assert pickle.loads(pickle.dumps(constraint)) == constraint
    assert json.loads(json.dumps(dataclasses.asdict(constraint)))["reasoning_budget"] == 32


def test_the_developer_message_names_the_format_for_the_model():
    rf = ResponseFormat("pet", compile_schema(SCHEMA).grammar, SCHEMA, "A pet and its owner")
    text = get_encoding().decode(render_chat(HI, response_format=rf).token_ids)
    section = f"# Response Formats\n\n## pet\n\n// A pet and its owner\n{json.dumps(SCHEMA, separators=(',', ':'))}"
    assert f"<|start|>developer<|message|># Instructions\n\n{section}<|end|>" in text


@pytest.mark.parametrize("choice", [ToolChoice("auto"), None])
def test_without_a_grammar_there_is_no_structured_constraint(choice):
    assert render_chat(HI, tools=[FunctionTool("noop")], tool_choice=choice).constraint is None
