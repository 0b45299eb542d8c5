"""Checks every request model shares: text must be real Unicode (no lone UTF-16 surrogates)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic_core import PydanticCustomError

# One C-speed scan per string: a Python loop over the characters of a 4 MB text would hold the event loop.
_SURROGATE = re.compile("[\ud800-\udfff]")
_NO_TEXT = {int, float, bool, type(None)}


def has_lone_surrogate(value: Any) -> bool:
    """True when a string anywhere in `value` (lists and dicts walked) holds a surrogate code point.

    JSON lets a client write "\\ud800" alone; Python keeps it, and it cannot be encoded as UTF-8,
    so the tokenizer and the prompt renderer would fail on it later. The walk keeps its own stack: a
    deeply nested value (a tool's JSON schema) must not exhaust Python's."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item) is not None:
                return True
        elif isinstance(item, (list, tuple)):
            if not set(map(type, item)) <= _NO_TEXT:  # a prompt of token ids is walked at C speed
                pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
    return False


def refuse_lone_surrogates(value: Any) -> Any:
    if has_lone_surrogate(value):
        raise PydanticCustomError(
            "invalid_unicode", "text must be valid Unicode (a lone UTF-16 surrogate such as \\ud800 is not)"
        )
    return value


class CheckedRequest(BaseModel):
    """A request body: NaN and Infinity (which Python's JSON parser accepts) are refused as "not a finite
    number", and every text as invalid Unicode when it holds a lone surrogate. Subclasses say what an
    unknown field does (`extra`)."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        return refuse_lone_surrogates(value)
