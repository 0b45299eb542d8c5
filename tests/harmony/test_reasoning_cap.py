"""A key's reasoning-token cap at the token level: after N analysis tokens the constraint writes
`<|end|><|start|>assistant<|channel|>final<|message|>` and the answer runs on, free or under the request's grammar."""

from __future__ import annotations

import json

from mask_ids import allowed_ids

from tkr_embed.engine.constraints import advance_states
from tkr_embed.harmony import special_tokens as special
from tkr_embed.harmony.render import render_chat
from tkr_embed.harmony.structured_constraint import HarmonyConstraint
from tkr_embed.harmony.tokenizer import get_encoding
from tkr_embed.harmony.types import ChatMessage, FunctionTool, ResponseFormat, ToolChoice
from tkr_embed.structured.schema import compile_schema

HI = [ChatMessage("user", "Hi")]
ENCODING = get_encoding()
WORD = ENCODING.encode(" think", disallowed_special=())[0]
SPECIALS = {"<|channel|>", "<|message|>", "<|start|>", "<|end|>", "<|constrain|>"}


def ids(text: str) -> list[int]:
    return ENCODING.encode(text, allowed_special=SPECIALS)


def forced_tokens(state, count: int) -> list[int]:
    """The next `count` tokens, each the only one the state allows."""
    written = []
    for _ in range(count):
        assert state.free_tokens_ahead() == 0
        (token,) = allowed_ids(state)
        state.advance(token)
        written.append(token)
    return written


def test_without_a_cap_a_plain_chat_has_no_constraint() -> None:
    assert render_chat(HI).constraint_for(128) is None


def test_the_cap_ends_the_analysis_after_n_tokens_and_opens_a_free_final_answer() -> None:
    constraint = render_chat(HI).constraint_for(1000, 5)
    assert isinstance(constraint, HarmonyConstraint) and constraint.reasoning_budget == 5
    state = constraint.start()
    for token in ids("<|channel|>analysis<|message|>"):
        state.advance(token)
    for written in range(5):
        assert state.free_tokens_ahead() > 0, written  # the reasoning itself is free up to the cap
        state.advance(WORD)
    exit_tokens = ids("<|end|><|start|>assistant<|channel|>final<|message|>")
    assert forced_tokens(state, len(exit_tokens)) == exit_tokens
    for _ in range(50):
        assert state.free_tokens_ahead() == 2  # the answer is free, however long (<|return|> stops the sequence)
        state.advance(WORD)


def test_lookahead_stops_before_the_cap_so_the_exit_is_never_skipped() -> None:
    state = render_chat(HI).constraint_for(1000, 3).start()
    for token in ids("<|channel|>analysis<|message|>"):
        state.advance(token)
    state.advance(WORD)
    assert state.free_tokens_ahead() == 2
    state.advance(WORD)
    assert state.free_tokens_ahead() == 1  # one free token left: no two-token lookahead across the cap


def test_a_second_analysis_message_counts_against_the_same_cap() -> None:
    state = render_chat(HI).constraint_for(1000, 4).start()
    for token in ids("<|channel|>analysis<|message|>"):
        state.advance(token)
    for token in (WORD, WORD, WORD, special.END, *ids("<|start|>assistant<|channel|>analysis<|message|>")):
        state.advance(token)
    state.advance(WORD)  # the fourth reasoning token
    exit_tokens = ids("<|end|><|start|>assistant<|channel|>final<|message|>")
    assert forced_tokens(state, len(exit_tokens)) == exit_tokens


def test_with_a_json_schema_the_smaller_of_the_cap_and_half_max_tokens_applies_and_the_answer_is_json() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    rendered = render_chat(HI, response_format=ResponseFormat("answer", compile_schema(schema).grammar, schema))
    assert rendered.constraint_for(100, 7).reasoning_budget == 7
    assert rendered.constraint_for(10, 7).reasoning_budget == 5
    state = rendered.constraint_for(100, 2).start()
    for token in ids("<|channel|>analysis<|message|>"):
        state.advance(token)
    state.advance(WORD)
    state.advance(WORD)
    forced_tokens(state, len(ids("<|end|><|start|>assistant<|channel|>final<|message|>")))
    body = ids('{"ok":true}')
    for token in body:
        assert token in allowed_ids(state)
        advance_states([(state, token)])
    assert allowed_ids(state) == [special.RETURN]
    assert json.loads(ENCODING.decode(body)) == {"ok": True}


def test_tool_calls_stay_possible_under_the_cap() -> None:
    tools = [FunctionTool("get_time", None, {"type": "object"})]
    for choice in (ToolChoice(mode="auto"), ToolChoice(mode="required")):
        rendered = render_chat(HI, tools=tools, tool_choice=choice)
        state = rendered.constraint_for(200, 3).start()
        header = ids("<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>")
        header = header[len(rendered.forced_prefix) :]
        for token in header:
            if state.free_tokens_ahead() == 0:
                assert token in allowed_ids(state)
            state.advance(token)
        assert state.free_tokens_ahead() == 2  # free arguments
