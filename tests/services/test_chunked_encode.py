"""Prompts are tokenized in short pieces (harmony/chunked_encode.py) with exactly the ids of one call, and the
cost of a long run with no place to cut is bounded."""

from __future__ import annotations

import random
import string
import time

from tkr_embed.harmony import render as render_module
from tkr_embed.harmony.chunked_encode import encode_plain
from tkr_embed.harmony.render import render_chat
from tkr_embed.harmony.tokenizer import get_encoding
from tkr_embed.harmony.types import ChatMessage

SEPARATORS = [" ", " ", " ", "  ", "\n", " \n", "\n\n", "\t", ". ", ", ", "'s ", " 1234", "<|end|>", " <|start|>x"]


def _text(rng: random.Random, size: int) -> str:
    parts: list[str] = []
    while sum(map(len, parts)) < size:
        if rng.random() < 0.8:
            parts.append("".join(rng.choices(string.ascii_letters + "éßπ中文🙂", k=rng.randint(1, 12))))
        else:
            parts.append(str(rng.randint(0, 10**6)))
        parts.append(rng.choice(SEPARATORS))
    return "".join(parts)[:size]


def test_pieces_give_the_ids_of_one_call() -> None:
    encoding = get_encoding()
    rng = random.Random(0)
    for _ in range(40):
        text = _text(rng, rng.randint(9_000, 40_000))
        assert encode_plain(encoding, text) == encoding.encode(text, disallowed_special=())


def test_long_messages_render_as_harmony_renders_them(monkeypatch) -> None:
    rng = random.Random(1)
    messages = [
        ChatMessage(role="user", content=_text(rng, 20_000)),
        ChatMessage(role="assistant", content=_text(rng, 9_000), reasoning=_text(rng, 12_000)),
        ChatMessage(role="user", content=_text(rng, 30_000)),
    ]
    spliced = render_chat(messages, reasoning_effort="low").token_ids
    monkeypatch.setattr(render_module, "_long_text", lambda message: None)
    assert spliced == render_chat(messages, reasoning_effort="low").token_ids


def test_a_megabyte_with_no_place_to_cut_takes_seconds_not_minutes() -> None:
    started = time.perf_counter()
    ids = encode_plain(get_encoding(), "a" * 1_000_000)
    assert ids and time.perf_counter() - started < 10
