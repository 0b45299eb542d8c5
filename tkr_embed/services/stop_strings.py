"""The request's `stop` field, checked and as a list (the engine's StopStringMatcher does the matching)."""

from __future__ import annotations

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
