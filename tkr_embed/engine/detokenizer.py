"""Incremental detokenization with stop strings held back until they are ruled out."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from tkr_embed.engine.tokenizer import Tokenizer


@dataclass(frozen=True)
class DetokenizedDelta:
    """Text that became final with the latest tokens, and the stop string that matched, if any."""

    new_text: str
    stop_string: str | None = None


class IncrementalDetokenizer:
    """Turns one completion's tokens into text, a token at a time.

    Invariants: a multi-byte UTF-8 character split over tokens is emitted whole, once complete;
    text that may be the start of a stop string is held back until ruled out; the stop string
    itself (and anything after it) is never emitted unless `include_stop_str_in_output`.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        stop: list[str] | None = None,
        include_stop_str_in_output: bool = False,
    ) -> None:
        self._tokenizer = tokenizer
        self._stop = list(stop or [])
        self._include_stop = include_stop_str_in_output
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""            # everything decoded so far
        self._num_emitted = 0      # characters of _text already handed out
        self.stopped = False

    @property
    def text(self) -> str:
        """The text emitted so far."""
        return self._text[: self._num_emitted]

    def add_token(self, token_id: int) -> DetokenizedDelta:
        """Decode one more token; return the newly final text (possibly empty)."""
        if self.stopped:
            return DetokenizedDelta("")
        self._text += self._decoder.decode(self._tokenizer.decode_bytes([token_id]))
        return self._release(final=False)

    def finish(self) -> DetokenizedDelta:
        """The completion ended for another reason: flush any held-back text."""
        if self.stopped:
            return DetokenizedDelta("")
        self._text += self._decoder.decode(b"", final=True)
        delta = self._release(final=True)
        self.stopped = True
        return delta

    def _release(self, final: bool) -> DetokenizedDelta:
        # Every stop-string occurrence starts at or after _num_emitted: earlier starts were held back.
        match_pos, match_stop = self._find_stop()
        if match_stop is not None:
            end = match_pos + len(match_stop) if self._include_stop else match_pos
            self._text = self._text[:end]
            self.stopped = True
            return DetokenizedDelta(self._take(end), match_stop)
        end = len(self._text) if final else len(self._text) - self._held_back_len()
        return DetokenizedDelta(self._take(end))

    def _take(self, end: int) -> str:
        new_text = self._text[self._num_emitted : end]
        self._num_emitted = max(self._num_emitted, end)
        return new_text

    def _find_stop(self) -> tuple[int, str | None]:
        best_pos, best_stop = len(self._text) + 1, None
        for stop in self._stop:
            pos = self._text.find(stop, self._num_emitted)
            if pos != -1 and pos < best_pos:
                best_pos, best_stop = pos, stop
        return best_pos, best_stop

    def _held_back_len(self) -> int:
        """Length of the longest tail of the unemitted text that is a proper prefix of a stop string."""
        pending = self._text[self._num_emitted :]
        longest = 0
        for stop in self._stop:
            for length in range(min(len(stop) - 1, len(pending)), longest, -1):
                if pending.endswith(stop[:length]):
                    longest = length
                    break
        return longest
