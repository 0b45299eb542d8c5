"""Plain-text encoding in short pieces, so that tokenizing megabytes never holds the GIL for long.

openai-harmony's encoder holds the GIL for much of a call (about a quarter of a second per megabyte), so
one long text would stall every other thread, the server's event loop included. Its byte-pair merge is also
quadratic in the length of one pre-token: 50,000 letters without a space take a second, a megabyte minutes.

The text is cut only where the o200k pre-tokenizer itself starts a new piece, so the ids are exactly those
of one call: before a space that follows a non-space character (no piece crosses it: spaces lead pieces and
never end them), or before a newline that follows a letter or a digit. A run of CHUNK_CHARS characters with
no such place (a long base64 blob, a line of one repeated letter) is cut every RUN_CHARS characters: there
the ids may differ from a single call's at the cut, which bounds the cost of the merge (a megabyte of one
letter: about a second in all, a few milliseconds at a time).
"""

from __future__ import annotations

from collections.abc import Iterator

from openai_harmony import HarmonyEncoding

CHUNK_CHARS = 8192
RUN_CHARS = 2048


def _cut(text: str, start: int, end: int) -> int:
    """The last place in (start, end] where the pre-tokenizer starts a piece; else start + RUN_CHARS."""
    cut = text.rfind(" ", start + 1, end + 1)
    while cut > start:
        if not text[cut - 1].isspace():
            return cut
        cut = text.rfind(" ", start + 1, cut)
    cut = text.rfind("\n", start + 1, end + 1)
    while cut > start:
        if text[cut - 1].isalnum():
            return cut
        cut = text.rfind("\n", start + 1, cut)
    return min(end, start + RUN_CHARS)


def pieces(text: str, chunk_chars: int = CHUNK_CHARS) -> Iterator[str]:
    start = 0
    while len(text) - start > chunk_chars:
        cut = _cut(text, start, start + chunk_chars)
        yield text[start:cut]
        start = cut
    yield text[start:]


def encode_plain(encoding: HarmonyEncoding, text: str) -> list[int]:
    """`text` as ordinary text (special-token strings encoded as text), in pieces of at most CHUNK_CHARS."""
    if len(text) <= CHUNK_CHARS:
        return encoding.encode(text, disallowed_special=())
    ids: list[int] = []
    for piece in pieces(text):
        ids.extend(encoding.encode(piece, disallowed_special=()))
    return ids
