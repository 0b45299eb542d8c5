"""The nesting depth of a JSON body, measured before parsing: exact at the limit, blind to brackets inside
strings (escaped quotes and backslashes included), and quick on a large flat body."""

from __future__ import annotations

import json
import time

import pytest

from tkr_embed.api.json_depth import MAX_JSON_DEPTH, nests_deeper_than


def _nested(depth: int) -> bytes:
    """Objects and arrays in turn, `depth` levels, written out (json.dumps itself recurses)."""
    opening = "".join('{"k": ' if level % 2 == 0 else "[" for level in range(depth))
    closing = "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth)))
    return f'{opening}"leaf"{closing}'.encode()


@pytest.mark.parametrize("depth", [0, 1, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH])
def test_up_to_the_limit_passes(depth: int) -> None:
    assert json.loads(_nested(depth))
    assert not nests_deeper_than(_nested(depth))


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 140, 1000, 100_000])
def test_beyond_the_limit_is_caught(depth: int) -> None:
    assert nests_deeper_than(_nested(depth))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 500,  # brackets inside a string
        '\\"' + "{" * 500,  # after an escaped quote, still inside
        "\\\\",  # an escaped backslash ends right before the closing quote
    ],
)
def test_brackets_inside_strings_do_not_count(text: str) -> None:
    body = json.dumps({"a": text, "b": "[[[[" * 100, "c": [[1]]}).encode()
    assert json.loads(body)["a"] == text
    assert not nests_deeper_than(body)


def test_unbalanced_brackets_count_their_openers() -> None:
    assert nests_deeper_than(b"[" * (MAX_JSON_DEPTH + 1))
    assert nests_deeper_than(b"]" * 10 + b"[" * (MAX_JSON_DEPTH + 1))
    assert not nests_deeper_than(b"[" * MAX_JSON_DEPTH + b"}")


def test_a_large_flat_body_is_measured_quickly() -> None:
    items = [{"role": "user", "content": [{"type": "input_text", "text": "[x] {y}"}]} for _ in range(60_000)]
    body = json.dumps({"input": items}).encode()
    started = time.perf_counter()
    assert not nests_deeper_than(body)
    assert time.perf_counter() - started < 0.5  # about 35 ms on one core; json.loads of it takes longer
