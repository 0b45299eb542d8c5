"""tool_choice "required": after the forced prefix, the recipient can only be a declared function."""

from __future__ import annotations

import dataclasses
import json
import pickle
import random

from tkr_embed.engine.constraints import FREE_FOREVER
from tkr_embed.harmony import special_tokens as special
from tkr_embed.harmony.parser import HarmonyStreamParser
from tkr_embed.harmony.recipient_constraint import OneOfTokenSequences, recipient_constraint
from tkr_embed.harmony.render import render_chat
from tkr_embed.harmony.tokenizer import get_encoding
from tkr_embed.harmony.types import ChatMessage, FunctionTool, ToolChoice

HI = [ChatMessage("user", "Hi")]


def ids(text: str) -> list[int]:
    return get_encoding().encode(text, allowed_special="all")


def test_the_allowed_ids_at_each_step_spell_a_declared_name_then_a_header_tail():
    [get, weather] = ids(".get_weather")  # ".get", "_weather"
    [lookup] = ids(".lookup")
    state = recipient_constraint(get_encoding(), ["get_weather", "get", "lookup"]).start()
    assert state.allowed_tokens() == sorted([get, lookup])
    state.advance(get)
    # ".get" is a name of its own and the start of ".get_weather": a tail or "_weather" may follow.
    assert state.allowed_tokens() == sorted([weather, ids(" ")[0], special.MESSAGE])
    for token_id in ids("_weather <|constrain|>json"):
        state.advance(token_id)
    assert state.allowed_tokens() == [special.MESSAGE]
    state.advance(special.MESSAGE)
    # The header is complete: the arguments are free, and stay free whatever comes.
    assert state.free_tokens_ahead() == FREE_FOREVER
    state.advance(ids("{")[0])
    assert state.free_tokens_ahead() == FREE_FOREVER


def test_message_right_after_the_name_ends_the_constraint_too():
    state = recipient_constraint(get_encoding(), ["lookup"]).start()
    for token_id in ids(".lookup<|message|>"):
        assert token_id in state.allowed_tokens()
        state.advance(token_id)
    assert state.free_tokens_ahead() == FREE_FOREVER


def test_only_required_gets_a_constraint_and_it_names_the_offered_tools():
    tools = [FunctionTool("get_weather", "Weather", {"type": "object", "required": ["city"]}), FunctionTool("lookup")]
    required = render_chat(HI, tools=tools, tool_choice=ToolChoice("required"))
    assert required.constraint == recipient_constraint(get_encoding(), ["lookup", "get_weather"])
    for choice in (ToolChoice("auto"), ToolChoice("none"), ToolChoice("function", "lookup"), None):
        assert render_chat(HI, tools=tools, tool_choice=choice).constraint is None


def test_the_constraint_pickles_and_serialises_by_value():
    constraint = recipient_constraint(get_encoding(), ["get_weather", "lookup"])
    assert pickle.loads(pickle.dumps(constraint)) == constraint
    # The response cache keys on dataclasses.asdict(SamplingParams) as JSON.
    assert json.loads(json.dumps(dataclasses.asdict(constraint)))["sequences"] == [
        list(sequence) for sequence in constraint.sequences
    ]


def test_any_walk_the_constraint_allows_parses_as_a_call_to_a_declared_tool():
    names = ["get_weather", "get", "get_time", "lookup", "a-b_2"]
    tools = [FunctionTool(name) for name in names]
    prompt = render_chat(HI, tools=tools, tool_choice=ToolChoice("required"))
    rng = random.Random(0)
    seen = set()
    for _ in range(300):
        state = prompt.constraint.start()
        generated = []
        while state.free_tokens_ahead() == 0:
            generated.append(rng.choice(state.allowed_tokens()))
            state.advance(generated[-1])
        parser = HarmonyStreamParser(prompt.forced_prefix)
        for token_id in [*generated, *ids('{"x": 1}'), special.CALL]:
            parser.feed(token_id)
        result = parser.result()
        assert [(call.name, call.arguments) for call in result.tool_calls] == [(result.tool_calls[0].name, '{"x": 1}')]
        assert result.tool_calls[0].name in names and result.content == ""
        seen.add(result.tool_calls[0].name)
    assert seen == set(names)


def test_a_stray_id_frees_the_rest_instead_of_allowing_nothing():
    state = OneOfTokenSequences(((1, 2, 3), (1, 4))).start()
    state.advance(1)
    assert state.allowed_tokens() == [2, 4]
    state.advance(99)  # never sampled under the mask; the engine must never be left with no allowed id
    assert state.free_tokens_ahead() == FREE_FOREVER
