"""Stop strings matched on the streamed answer text (the final channel), never emitted."""

from __future__ import annotations

from dataclasses import dataclass

from tkr_embed.services.errors import BadRequestError

MAX_STOP_STRINGS = 16


def stop_list(stop: str | list[str] | None) -> list[str]:
    """The request's `stop` field as a list; empty strings and more than 16 are refused."""
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if any(not s for s in stops):
        raise BadRequestError("stop strings must not be empty", "stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise BadRequestError(f"at most {MAX_STOP_STRINGS} stop strings", "stop")
    return stops


@dataclass
class StopMatch:
    text: str        # what may be emitted now
    stopped: bool    # a stop string was found; nothing after it may be emitted


class StopStringMatcher:
    """Holds back the tail of the text that may be the start of a stop string."""

    def __init__(self, stop: list[str]) -> None:
        self._stop = [s for s in stop if s]
        self._pending = ""
        self.stopped = False

    def push(self, text: str) -> StopMatch:
        if self.stopped:
            return StopMatch("", True)
        if not self._stop:
            return StopMatch(text, False)
        buffer = self._pending + text
        first = min((i for i in (buffer.find(s) for s in self._stop) if i >= 0), default=-1)
        if first >= 0:
            self._pending = ""
            self.stopped = True
            return StopMatch(buffer[:first], True)
        keep = self._held_back_length(buffer)
        self._pending = buffer[len(buffer) - keep:] if keep else ""
        return StopMatch(buffer[: len(buffer) - keep], False)

    def flush(self) -> str:
        """The held-back text once the stream ended without a match."""
        pending, self._pending = self._pending, ""
        return "" if self.stopped else pending

    def _held_back_length(self, buffer: str) -> int:
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
