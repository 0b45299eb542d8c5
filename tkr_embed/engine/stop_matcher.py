"""Stop strings on a stream of text: what may be emitted now, and where the stream must end."""

from __future__ import annotations

from collections.abc import Sequence


class StopStringMatcher:
    """Holds back the tail of a text stream that may be the start of a stop string, until it is ruled out.

    Invariants: text is released in order and once; the stop string itself (and anything after it) is never
    released unless `include_stop_str_in_output`; once a stop string matched, nothing more is released. When
    several match, the one that starts first wins, and of those starting at the same place, the one listed first.
    It works on text alone, so the engine's detokenizer and the services' answer decoder share it.
    """

    def __init__(self, stop: Sequence[str], include_stop_str_in_output: bool = False) -> None:
        self._stop = list(stop)
        self._include_stop = include_stop_str_in_output
        self._pending = ""  # text received but not yet released: it may be the start of a stop string
        self.stop_string: str | None = None  # the stop string that matched, once one did

    @property
    def stopped(self) -> bool:
        return self.stop_string is not None

    def push(self, text: str) -> str:
        """Take the next piece of the stream; return the text that may be emitted now (possibly empty)."""
        if self.stop_string is not None:
            return ""
        if not self._stop:
            return text
        buffer = self._pending + text
        match_pos, match_stop = len(buffer), None
        for stop in self._stop:
            pos = buffer.find(stop)
            if pos != -1 and pos < match_pos:
                match_pos, match_stop = pos, stop
        if match_stop is not None:
            self._pending = ""
            self.stop_string = match_stop
            return buffer[: match_pos + len(match_stop) if self._include_stop else match_pos]
        keep = self._held_back_length(buffer)
        self._pending = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The held-back text, once the stream ended without a match."""
        pending, self._pending = self._pending, ""
        return pending

    def _held_back_length(self, buffer: str) -> int:
        """Length of the longest tail of `buffer` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self._stop:
            for length in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:length]):
                    longest = length
                    break
        return longest
