"""What one request may ask for, checked before any expensive work (the server's `server.max_*` settings).

The counts (input items, messages, prompts) are checked while the body is validated, before the items
themselves are: a body of 60,000 items is refused at the cost of one `len()`. The sizes that need the
validated request (prompt characters, prompt tokens, sequences, the total work) are checked by the services.

The limits are process-wide (one server per process): request validation runs inside the web framework,
where nothing but the model class reaches the validators. `set_request_limits` installs the configured
ones at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticCustomError


@dataclass(frozen=True)
class RequestLimits:
    """Per-request admission limits; each violation is a 400 naming the field and the limit."""

    # Items of /v1/responses `input`, messages of /v1/chat/completions and /chat.
    max_input_items: int = 2048
    # Prompts in one /v1/completions request.
    max_prompts: int = 64
    # Engine sequences one request starts: prompts x n.
    max_sequences: int = 128
    # Characters of prompt text in one request (all messages, prompts and instructions together).
    max_prompt_chars: int = 1_048_576
    # Prompt tokens of one request, summed over its prompts.
    max_prompt_tokens: int = 262_144
    # The total work one request may start: the sum over its sequences of prompt tokens + max_tokens.
    # A request without max_tokens gets an equal share of what is left (see services/admission.py).
    max_request_tokens: int = 1_048_576


_limits = RequestLimits()


def request_limits() -> RequestLimits:
    return _limits


def set_request_limits(limits: RequestLimits) -> None:
    global _limits
    _limits = limits


def check_item_count(value: Any, limit: int, what: str, setting: str) -> Any:
    """A before-validator's check: a list longer than `limit` is refused before its items are validated."""
    if isinstance(value, list) and len(value) > limit:
        raise PydanticCustomError(
            "too_many_items",
            "at most {limit} {what} in one request (got {count}; setting {setting})",
            {"limit": limit, "what": what, "count": len(value), "setting": setting},
        )
    return value
