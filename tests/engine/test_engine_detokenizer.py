"""Incremental detokenization: whole UTF-8 characters, stop strings held back and never leaked."""

from __future__ import annotations

from engine_fakes import ToyTokenizer

from tkr_embed.engine.detokenizer import IncrementalDetokenizer

A, B, C, D, X = 0, 1, 2, 3, 23
AB, BC = 40, 41  # two-letter tokens "ab", "bc"
E_ACUTE_1, E_ACUTE_2 = 37, 38


def feed(detok: IncrementalDetokenizer, tokens: list[int]) -> list[str]:
    return [detok.add_token(t).new_text for t in tokens]


def test_multibyte_character_split_over_tokens_is_emitted_whole() -> None:
    detok = IncrementalDetokenizer(ToyTokenizer())
    assert feed(detok, [A, E_ACUTE_1, E_ACUTE_2, B]) == ["a", "", "é", "b"]


def test_stop_string_split_across_tokens_never_leaks() -> None:
    detok = IncrementalDetokenizer(ToyTokenizer(), stop=["bcd"])
    deltas = feed(detok, [A, BC])
    assert deltas == ["a", ""]  # "bc" may start "bcd": held back
    final = detok.add_token(D)
    assert final.stop_string == "bcd" and final.new_text == ""
    assert detok.text == "a" and detok.stopped


def test_stop_string_included_when_asked() -> None:
    detok = IncrementalDetokenizer(ToyTokenizer(), stop=["bcd"], include_stop_str_in_output=True)
    deltas = feed(detok, [A, BC, D, X])
    assert "".join(deltas) == "abcd" and detok.text == "abcd"


def test_held_back_text_released_once_ruled_out() -> None:
    detok = IncrementalDetokenizer(ToyTokenizer(), stop=["bcd"])
    assert feed(detok, [B, C, X]) == ["", "", "bcx"]


def test_finish_flushes_held_back_text() -> None:
    detok = IncrementalDetokenizer(ToyTokenizer(), stop=["bcd"])
    assert feed(detok, [A, BC]) == ["a", ""]
    assert detok.finish().new_text == "bc"
    assert detok.text == "abc"


def test_text_after_stop_string_in_same_token_is_cut() -> None:
    detok = IncrementalDetokenizer(ToyTokenizer(), stop=["b"])
    result = detok.add_token(AB)
    assert result.new_text == "a" and result.stop_string == "b"


def test_earliest_of_several_stop_strings_wins() -> None:
    detok = IncrementalDetokenizer(ToyTokenizer(), stop=["cd", "bc"])
    results = [detok.add_token(t) for t in [A, B, C, D]]
    assert results[2].stop_string == "bc"
    assert detok.text == "a"
