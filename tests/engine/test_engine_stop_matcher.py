"""Stop strings on a text stream: held back while they may start, cut where they match, never leaked."""

from __future__ import annotations

from tkr_embed.engine.stop_matcher import StopStringMatcher


def feed(stops: list[str], pieces: list[str], include_stop: bool = False) -> tuple[list[str], str | None, str]:
    matcher = StopStringMatcher(stops, include_stop)
    emitted = [matcher.push(piece) for piece in pieces]
    return emitted, matcher.stop_string, matcher.flush()


def test_match_across_pieces_is_cut_and_never_emitted() -> None:
    emitted, stop, tail = feed(["END"], ["one E", "N", "D two"])
    assert emitted == ["one ", "", ""] and stop == "END" and tail == ""


def test_false_start_is_released() -> None:
    emitted, stop, tail = feed(["END"], ["one E", "N", "x"])
    assert emitted == ["one ", "", "ENx"] and stop is None and tail == ""


def test_held_tail_is_flushed_at_the_end() -> None:
    emitted, stop, tail = feed(["END"], ["abc EN"])
    assert emitted == ["abc "] and stop is None and tail == "EN"


def test_stop_string_included_when_asked() -> None:
    emitted, stop, tail = feed(["END"], ["one E", "ND two"], include_stop=True)
    assert emitted == ["one ", "END"] and stop == "END" and tail == ""


def test_earliest_of_several_stops_wins() -> None:
    emitted, stop, _ = feed(["xyz", "b"], ["aaxyzb"])
    assert emitted == ["aa"] and stop == "xyz"


def test_of_stops_starting_at_the_same_place_the_first_listed_wins() -> None:
    emitted, stop, _ = feed(["ab", "abc"], ["xabc"], include_stop=True)
    assert emitted == ["xab"] and stop == "ab"


def test_nothing_is_released_after_a_match() -> None:
    matcher = StopStringMatcher(["b"])
    assert matcher.push("ab") == "a" and matcher.stopped
    assert matcher.push("more") == "" and matcher.flush() == ""


def test_no_stops_passes_through() -> None:
    assert feed([], ["a", "b"]) == (["a", "b"], None, "")
