"""Stop strings on the streamed answer: held back while they may start, cut where they match."""

from __future__ import annotations

from tkr_embed.services.stop_strings import StopStringMatcher


def feed(stops: list[str], pieces: list[str]) -> tuple[list[str], bool, str]:
    matcher = StopStringMatcher(stops)
    emitted = [matcher.push(piece).text for piece in pieces]
    return emitted, matcher.stopped, matcher.flush()


def test_match_across_pieces_is_cut_and_never_emitted():
    emitted, stopped, tail = feed(["END"], ["one E", "N", "D two"])
    assert emitted == ["one ", "", ""] and stopped and tail == ""


def test_false_start_is_released():
    emitted, stopped, tail = feed(["END"], ["one E", "N", "x"])
    assert "".join(emitted) == "one ENx" and not stopped and tail == ""


def test_held_tail_is_flushed_at_the_end():
    emitted, stopped, tail = feed(["END"], ["abc EN"])
    assert emitted == ["abc "] and not stopped and tail == "EN"


def test_earliest_of_several_stops_wins():
    emitted, stopped, _ = feed(["xyz", "b"], ["aaxyzb"])
    assert emitted == ["aa"] and stopped


def test_no_stops_passes_through():
    assert feed([], ["a", "b"]) == (["a", "b"], False, "")
