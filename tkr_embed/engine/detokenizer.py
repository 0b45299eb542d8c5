"""Incremental detokenization: token ids to text, whole UTF-8 characters, stop strings cut."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from tkr_embed.engine.outputs import joined_text
from tkr_embed.engine.stop_matcher import StopStringMatcher
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
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = StopStringMatcher(stop or [], include_stop_str_in_output)
        # everything emitted so far, as pieces (`joined_text`)
        self._pieces: list[str] = []
        self.stopped = False  # a stop string matched, or finish() flushed the rest: no more text

    @property
    def text(self) -> str:
        """The text emitted so far (joined when asked for, then kept as one piece)."""
        return joined_text(self._pieces)

    def add_token(self, token_id: int) -> DetokenizedDelta:
        """Decode one more token; return the newly final text (possibly empty)."""
        if self.stopped:
            return DetokenizedDelta("")
        return self._emit(self._decoder.decode(self._tokenizer.decode_bytes([token_id])), final=False)

    def finish(self) -> DetokenizedDelta:
        """The completion ended for another reason: flush any held-back text."""
        if self.stopped:
            return DetokenizedDelta("")
        delta = self._emit(self._decoder.decode(b"", final=True), final=True)
        self.stopped = True
        return delta

    def _emit(self, decoded: str, final: bool) -> DetokenizedDelta:
        new_text = self._stop.push(decoded)
        if self._stop.stopped:
            self.stopped = True
        elif final:
            new_text += self._stop.flush()
        if new_text:
            self._pieces.append(new_text)
        return DetokenizedDelta(new_text, self._stop.stop_string)
