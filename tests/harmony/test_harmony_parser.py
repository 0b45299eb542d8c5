"""The streaming parser on scripted token sequences written with the real harmony encoding."""

from __future__ import annotations

import random

import pytest

from tkr_embed.harmony.parser import (
    ContentDelta,
    HarmonyStreamParser,
    ParsedOutput,
    ReasoningDelta,
    ToolCallDelta,
)
from tkr_embed.harmony.render import render_chat
from tkr_embed.harmony.tokenizer import get_encoding, get_tokenizer
from tkr_embed.harmony.types import ChatMessage, FunctionTool, ToolChoice


def tokens(text: str) -> list[int]:
    """Harmony text (special tokens included) as the model would generate it."""
    return get_encoding().encode(text, allowed_special="all")


def run(token_ids: list[int], forced_prefix: list[int] | None = None) -> tuple[list, ParsedOutput]:
    parser = HarmonyStreamParser(forced_prefix)
    events = [event for token_id in token_ids for event in parser.feed(token_id)]
    return events, parser.result()


def joined(events: list, kind: type) -> str:
    return "".join(event.text for event in events if isinstance(event, kind))


def assert_deltas_add_up(events: list, result: ParsedOutput) -> None:
    assert joined(events, ReasoningDelta) == result.reasoning
    assert joined(events, ContentDelta) == result.content
    calls = [event for event in events if isinstance(event, ToolCallDelta)]
    assert sorted({event.index for event in calls}) == list(range(len(result.tool_calls)))
    for index, call in enumerate(result.tool_calls):
        mine = [event for event in calls if event.index == index]
        assert (mine[0].id, mine[0].name) == (call.id, call.name)
        assert all(event.id is None and event.name is None for event in mine[1:])
        assert "".join(event.arguments for event in mine) == call.arguments


def test_reasoning_and_answer_are_split_by_channel():
    events, result = run(
        tokens(
            "<|channel|>analysis<|message|>The user greets me. Answer politely.<|end|>"
            "<|start|>assistant<|channel|>final<|message|>Hello! How can I help?<|return|>"
        )
    )
    assert result == ParsedOutput("The user greets me. Answer politely.", "Hello! How can I help?", [])
    assert "greets" not in result.content
    assert_deltas_add_up(events, result)
    assert len([e for e in events if isinstance(e, ContentDelta)]) > 1  # streamed, not one lump


def test_tool_call_is_parsed_with_its_arguments():
    events, result = run(
        tokens(
            "<|channel|>analysis<|message|>Need the weather tool.<|end|>"
            '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>'
        )
    )
    assert result.reasoning == "Need the weather tool."
    assert result.content == ""
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("get_weather", '{"city": "Paris"}')]
    assert result.tool_calls[0].id.startswith("call_") and len(result.tool_calls[0].id) > 10
    assert_deltas_add_up(events, result)


def test_recipient_in_the_role_header_as_harmony_renders_it():
    _, result = run(
        tokens(
            '<|start|>assistant to=functions.lookup<|channel|>commentary <|constrain|>json<|message|>{"q": 1}<|call|>'
        )
    )
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("lookup", '{"q": 1}')]


def test_multiple_tool_calls_get_their_own_index_and_id():
    events, result = run(
        tokens(
            "<|channel|>commentary<|message|>Checking both cities.<|end|>"
            '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Oslo"}<|call|>'
            '<|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{"tz":"CET"}<|call|>'
        )
    )
    assert result.content == "Checking both cities."  # a preamble is shown to the user
    assert [(c.name, c.arguments) for c in result.tool_calls] == [
        ("get_weather", '{"city":"Oslo"}'),
        ("get_time", '{"tz":"CET"}'),
    ]
    assert result.tool_calls[0].id != result.tool_calls[1].id
    assert_deltas_add_up(events, result)


def test_required_prefix_primes_the_parser():
    prompt = render_chat(
        [ChatMessage("user", "Hi")], tools=[FunctionTool("get_weather")], tool_choice=ToolChoice("required")
    )
    events, result = run(
        tokens('.get_weather <|constrain|>json<|message|>{"city":"Rome"}<|call|>'), prompt.forced_prefix
    )
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("get_weather", '{"city":"Rome"}')]
    assert_deltas_add_up(events, result)


def test_named_function_prefix_opens_the_call_on_the_first_feed():
    prompt = render_chat(
        [ChatMessage("user", "Hi")], tools=[FunctionTool("get_time")], tool_choice=ToolChoice("function", "get_time")
    )
    parser = HarmonyStreamParser(prompt.forced_prefix)
    assert parser.result().tool_calls[0].name == "get_time"
    first = parser.feed(tokens("{}")[0])
    assert isinstance(first[0], ToolCallDelta) and first[0].name == "get_time" and first[0].id is not None
    parser.feed(200012)
    assert [(c.name, c.arguments) for c in parser.result().tool_calls] == [("get_time", "{}")]


def test_trailing_junk_after_the_final_answer_is_ignored():
    answer = tokens("<|channel|>final<|message|>The answer is 4.<|end|>")
    junk = tokens("<|start|>assistant<|channel|>final<|message|>extra") + [200018, 200000, 5, 200008, 200002, 200006]
    events, result = run(answer + junk)
    assert result == ParsedOutput("", "The answer is 4.", [])
    assert_deltas_add_up(events, result)
    _, after_return = run(tokens("<|channel|>final<|message|>Done.<|return|>more text<|call|>"))
    assert after_return.content == "Done."


def test_plain_text_without_a_header_is_content():
    events, result = run(tokens("Just some words, no channel at all.") + [200002])
    assert result.content == "Just some words, no channel at all."
    assert_deltas_add_up(events, result)
    # Plain text streams at once instead of waiting for a header that never comes.
    parser = HarmonyStreamParser()
    assert parser.feed(tokens("Hello")[0]) == [ContentDelta("Hello")]


def test_header_text_never_becomes_answer_text():
    # A header longer than the bytes the parser keeps is still a header, however it ends.
    _, result = run(tokens("<|channel|>commentary to=functions" + "_x" * 200 + "<|end|>"))
    assert result == ParsedOutput("", "", [])
    # A recipient that starts the stream is a header even when a stop token cuts it.
    _, result = run(tokens(" to=functions.lookup<|call|>"))
    assert result == ParsedOutput("", "", [])
    # <|channel|> inside a body opens the next message's header.
    _, result = run(tokens("<|channel|>final<|message|>Hi.<|channel|>analysis<|message|>Hmm.<|end|>"))
    assert result == ParsedOutput("Hmm.", "Hi.", [])
    # Text that only begins like a recipient is the answer.
    _, result = run(tokens("to be, or not") + [200002])
    assert result == ParsedOutput("", "to be, or not", [])


def test_multibyte_characters_split_across_tokens_are_held_back():
    parrot = tokens("🦜")
    assert len(parrot) == 3
    parser = HarmonyStreamParser()
    for token_id in tokens("<|channel|>final<|message|>"):
        assert parser.feed(token_id) == []
    assert parser.feed(parrot[0]) == []
    assert parser.feed(parrot[1]) == []
    assert parser.feed(parrot[2]) == [ContentDelta("🦜")]
    text = "Ünïcödé 𝔘𝔫𝔦 日本語 🫠"
    events, result = run(
        tokens(
            f"<|channel|>analysis<|message|>{text}<|end|><|start|>assistant<|channel|>final<|message|>{text}<|return|>"
        )
    )
    assert result.reasoning == text and result.content == text
    assert all("\ufffd" not in event.text for event in events if not isinstance(event, ToolCallDelta))


def test_a_cut_character_at_the_end_of_a_message_is_replaced_not_lost():
    parrot = tokens("🦜")
    _, result = run(tokens("<|channel|>final<|message|>ok") + parrot[:2] + [200007])
    assert result.content == "ok\ufffd"


def test_made_up_tool_results_and_builtin_tools_never_reach_the_answer():
    _, result = run(
        tokens(
            "<|channel|>analysis<|message|>Search first.<|end|>"
            '<|start|>assistant<|channel|>analysis to=browser.search<|message|>{"query":"x"}<|end|>'
            '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"temp": 99}<|end|>'
            "<|start|>assistant<|channel|>final<|message|>Fine.<|return|>"
        )
    )
    assert result.content == "Fine."
    assert "99" not in result.content and result.tool_calls == []
    assert result.reasoning == 'Search first.{"query":"x"}'


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_tokens_never_raise_and_deltas_still_add_up(seed):
    rng = random.Random(seed)
    structural = [200002, 200003, 200005, 200006, 200007, 200008, 200012, 200000, 199999]
    stream = [rng.choice(structural) if rng.random() < 0.2 else rng.randrange(0, 201088) for _ in range(400)]
    stream += [-1, 10**6]
    events, result = run(stream)
    assert_deltas_add_up(events, result)


def test_random_text_tokens_become_content():
    rng = random.Random(7)
    stream = [rng.randrange(0, 199998) for _ in range(60)]
    events, result = run(stream)
    assert result.content == get_tokenizer().decode(stream)
    assert_deltas_add_up(events, result)


def test_agrees_with_harmonys_own_parser_on_a_well_formed_answer():
    from openai_harmony import Role

    completion = tokens(
        "<|channel|>analysis<|message|>Two tools are needed.<|end|>"
        "<|start|>assistant<|channel|>commentary<|message|>One moment.<|end|>"
        '<|start|>assistant<|channel|>commentary to=functions.search <|constrain|>json<|message|>{"q":"ü"}<|call|>'
    )
    reference = get_encoding().parse_messages_from_completion_tokens(completion, Role.ASSISTANT)
    _, result = run(completion)
    assert result.reasoning == "".join(m.content[0].text for m in reference if m.channel == "analysis")
    assert result.content == "".join(
        m.content[0].text for m in reference if m.channel == "commentary" and not m.recipient
    )
    assert [(f"functions.{c.name}", c.arguments) for c in result.tool_calls] == [
        (m.recipient, m.content[0].text) for m in reference if m.recipient
    ]


BODY_WORDS = (
    "The",
    " answer",
    " is",
    " 42",
    ".",
    " Ünïcödé",
    " 日本語",
    " 🦜",
    " to=functions.get_weather",
    " <|channel|>",
)
BODY_WORDS += (" analysis", "\n", '{"city": "Paris"}', " commentary", " final")


def _body(rng: random.Random) -> list[int]:
    """Message text as plain tokens: header words and special-token text in a body are text, nothing more."""
    return get_encoding().encode(
        "".join(rng.choice(BODY_WORDS) for _ in range(rng.randint(1, 12))), disallowed_special=()
    )


@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_harmonys_own_parser_on_random_well_formed_completions(seed):
    from openai_harmony import Role

    rng = random.Random(seed)
    headers = ["<|channel|>analysis", "<|channel|>commentary"]
    messages = [rng.choice(headers) for _ in range(rng.randint(0, 3))]
    name = rng.choice(("get_weather", "lookup", "a-b_2"))
    last = rng.choice(
        [
            "<|channel|>final",
            f"<|channel|>commentary to=functions.{name} <|constrain|>json",
            f" to=functions.{name}<|channel|>commentary <|constrain|>json",
            f"<|channel|>commentary to=functions.{name}",
        ]
    )
    completion: list[int] = []
    for index, header in enumerate([*messages, last]):
        if index:
            completion += tokens("<|start|>assistant")
        closing = "<|end|>" if index < len(messages) else ("<|call|>" if "functions" in header else "<|return|>")
        completion += tokens(header + "<|message|>") + _body(rng) + tokens(closing)
    reference = get_encoding().parse_messages_from_completion_tokens(completion, Role.ASSISTANT)
    events, result = run(completion)
    assert result.reasoning == "".join(m.content[0].text for m in reference if m.channel == "analysis")
    assert result.content == "".join(
        m.content[0].text for m in reference if m.channel != "analysis" and not m.recipient
    )
    assert [(f"functions.{c.name}", c.arguments) for c in result.tool_calls] == [
        (m.recipient, m.content[0].text) for m in reference if m.recipient
    ]
    assert_deltas_add_up(events, result)
