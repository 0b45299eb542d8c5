"""How deeply a JSON body nests, measured before anything parses it.

Python's JSON parser, pydantic and every walk over a request (the lone-surrogate check, the tool-schema
renderer) recurse once or more per level: a body nested a thousand levels deep reaches Python's recursion
limit somewhere and fails as a 500. A bound at the edge keeps every later walk shallow. The measure runs at
C speed: the brackets outside strings are kept, and innermost pairs removed one level per round.
"""

from __future__ import annotations

import re

# Far beyond any real request (a tool schema 25 levels deep is about 55 JSON levels).
MAX_JSON_DEPTH = 64
_OBJECTS_AS_ARRAYS = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_QUOTED = re.compile(rb'"[^"]*"')


def nests_deeper_than(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the arrays and objects of `body` (JSON, valid or not) nest more than `limit` levels deep."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    # Escapes out (an escaped backslash first, so `\\"` still ends its string), then only quotes and
    # brackets kept, objects counted as arrays.
    structure = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(_OBJECTS_AS_ARRAYS, _NOT_STRUCTURE)
    # Adjacent quotes enclose nothing: dropping them leaves every bracket inside or outside a string as it
    # was, and leaves for the (slower) pattern only the strings that hold brackets.
    brackets = _QUOTED.sub(b"", structure.replace(b'""', b"")).replace(b'"', b"")
    for depth in range(limit):
        if not brackets:
            return False
        inner_removed = brackets.replace(b"[]", b"")
        if len(inner_removed) == len(brackets):
            # Unbalanced (not JSON): what is left is closers then openers, and each opener nests one deeper.
            return depth + brackets.count(b"[") > limit
        brackets = inner_removed
    return bool(brackets)
