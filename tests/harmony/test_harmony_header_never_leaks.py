"""Property: whatever tokens come, header text never reaches reasoning, content or tool-call arguments.

Random streams mix harmony's special tokens, header words (roles, recipients, channels, content types, all
with ASCII letters or `=`) and body tokens drawn from the vocabulary's ids whose bytes hold no ASCII letter
and no `=`. A generator that follows harmony's grammar puts header words only where a header is (after
<|start|>, <|channel|> or <|constrain|>, or a ` to=` recipient opening a message, until <|message|>) and body
tokens everywhere else. So an ASCII letter or `=` in the parsed text can only be leaked header text.
"""

from __future__ import annotations

import functools
import random
import re

import pytest

from tkr_embed.engine.outputs import CompletionOutput, FinishReason
from tkr_embed.harmony import special_tokens as special
from tkr_embed.harmony.parser import ContentDelta, HarmonyStreamParser, ParsedOutput, ReasoningDelta, ToolCallDelta
from tkr_embed.harmony.render import render_chat
from tkr_embed.harmony.tokenizer import get_encoding, get_tokenizer
from tkr_embed.harmony.types import ChatMessage, FunctionTool, ToolChoice
from tkr_embed.services.harmony_decode import HarmonyDecoder

HEADER_TEXT = re.compile(r"[A-Za-z=]")
# Other special and reserved ids: <|endoftext|>, <|startoftext|>, <|reserved_200013|>, the last id.
OTHER_SPECIALS = (199999, 199998, 200013, 200018, 201087)
ROLE_WORDS = ("assistant", "user", "system", "functions.get_weather to=assistant", "assistant to=functions.lookup")
RECIPIENTS = (" to=functions.get_weather", " to=functions.lookup", " to=browser.search", " to=user", " to=")
CHANNEL_WORDS = (
    "analysis",
    "analysis",
    "commentary",
    "final",
    "commentary to=functions.get_weather ",
    "analysis to=python ",
)
CONTENT_TYPES = ("json", " code", "json ")


@functools.cache
def body_token_ids() -> tuple[int, ...]:
    tokenizer = get_tokenizer()
    return tuple(i for i in range(199998) if not re.search(rb"[A-Za-z=]", tokenizer.decode_bytes([i])))


@functools.cache
def encoded(text: str) -> tuple[int, ...]:
    return tuple(get_encoding().encode(text, disallowed_special=()))


def random_stream(rng: random.Random, length: int, state: str = "opening", section: str = "role") -> list[int]:
    """Tokens a model could write, well-formed or not; header words only where harmony reads a header.

    `state` at the start: "opening" (a message begun by the stream itself: a recipient makes it a header, text
    a body), "header" (in `section`: role, channel or constrain) or "body".
    """
    body = body_token_ids()
    stream: list[int] = []
    while len(stream) < length:
        roll = rng.random()
        if roll < 0.25:
            token_id = rng.choice(
                (special.START, special.CHANNEL, special.CONSTRAIN, special.MESSAGE)
                + (special.END, special.CALL, special.RETURN)
                + OTHER_SPECIALS
            )
            stream.append(token_id)
            if token_id == special.START:
                state, section = "header", "role"
            elif token_id in (special.CHANNEL, special.CONSTRAIN):
                state, section = "header", "channel" if token_id == special.CHANNEL else "constrain"
            elif token_id == special.MESSAGE and state != "body":
                state = "body"
            elif token_id in (special.END, special.CALL, special.RETURN):
                state = "opening"
        elif state == "header" and roll < 0.8:
            words = {"role": ROLE_WORDS + RECIPIENTS, "channel": CHANNEL_WORDS, "constrain": CONTENT_TYPES}[section]
            repeat = 40 if rng.random() < 0.05 else 1  # now and then longer than the header bytes kept
            stream.extend(encoded(rng.choice(words)) * repeat)
        elif state == "opening" and roll < 0.4:
            stream.extend(encoded(rng.choice(RECIPIENTS)))
            state, section = "header", "role"
        else:
            stream.extend(rng.choice(body) for _ in range(rng.randint(1, 6)))
            if state == "opening":
                state = "body"
    return stream


def parse(stream: list[int], forced_prefix: list[int] | None = None) -> tuple[list, ParsedOutput]:
    parser = HarmonyStreamParser(forced_prefix)
    events = [event for token_id in stream for event in parser.feed(token_id)]
    return events, parser.result()


def assert_no_header_text(result: ParsedOutput) -> None:
    assert not HEADER_TEXT.search(result.reasoning), result.reasoning
    assert not HEADER_TEXT.search(result.content), result.content
    for call in result.tool_calls:
        assert not HEADER_TEXT.search(call.arguments), call.arguments


def assert_deltas_add_up(events: list, result: ParsedOutput) -> None:
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == result.reasoning
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == result.content
    for index, call in enumerate(result.tool_calls):
        mine = [e for e in events if isinstance(e, ToolCallDelta) and e.index == index]
        assert (mine[0].name, "".join(e.arguments for e in mine)) == (call.name, call.arguments)


def test_random_streams_never_show_header_text():
    rng = random.Random(20)
    seen = {"content": 0, "reasoning": 0, "tool_calls": 0}
    for _ in range(600):
        events, result = parse(random_stream(rng, rng.randint(1, 300)))
        assert_no_header_text(result)
        assert_deltas_add_up(events, result)
        seen["content"] += bool(result.content)
        seen["reasoning"] += bool(result.reasoning)
        seen["tool_calls"] += bool(result.tool_calls)
    # The streams exercise every kind of output, so the absence of header text above means something.
    assert all(count >= 10 for count in seen.values()), seen


@pytest.mark.parametrize("mode", ["required", "function"])
def test_random_streams_after_a_tool_choice_prefix_never_show_header_text(mode):
    tools = [FunctionTool("get_weather", "Current weather", {"type": "object"}), FunctionTool("lookup")]
    choice = ToolChoice(mode, "lookup" if mode == "function" else None)
    prefix = render_chat([ChatMessage("user", "Hi")], tools=tools, tool_choice=choice).forced_prefix
    rng = random.Random(7)
    for _ in range(300):
        # The forced prefix leaves the stream inside a header's channel section (required) or in a tool
        # call's body (named).
        if mode == "required":
            name = encoded(rng.choice(("", ".get_weather ", ".lookup", "_x" * 200)))
            stream = [*name, *random_stream(rng, rng.randint(1, 200), "header", "channel")]
        else:
            stream = random_stream(rng, rng.randint(1, 200), "body")
        events, result = parse(stream, prefix)
        assert_no_header_text(result)
        assert_deltas_add_up(events, result)
        if mode == "function":
            assert result.tool_calls[0].name == "lookup"


def test_random_streams_never_show_header_text_through_the_decoder():
    """The services' decoder (stop strings, updates of several tokens) on the same streams."""
    rng = random.Random(3)
    for _ in range(200):
        stream = random_stream(rng, rng.randint(1, 200))
        decoder = HarmonyDecoder(1, None, stop=["\u3002\u3002"])
        start = 0
        while start < len(stream):
            size = rng.randint(1, 8)
            tokens = stream[start : start + size]
            start += size
            finished = FinishReason.LENGTH if start >= len(stream) else None
            decoder.step([CompletionOutput(0, tokens, [], "", "", finished)])
        result = decoder.results()[0]
        assert not HEADER_TEXT.search(result.reasoning) and not HEADER_TEXT.search(result.content)
        assert all(not HEADER_TEXT.search(call.arguments) for call in result.tool_calls)


def test_random_ids_of_the_whole_vocabulary_never_raise():
    rng = random.Random(11)
    structural = (special.START, special.CHANNEL, special.CONSTRAIN, special.MESSAGE, special.END, special.CALL)
    for _ in range(200):
        stream = [rng.choice(structural) if rng.random() < 0.15 else rng.randrange(0, 201088) for _ in range(200)]
        events, result = parse(stream + [-1, 10**6])
        assert_deltas_add_up(events, result)
