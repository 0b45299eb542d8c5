"""The tokenizer contract the engine needs (implemented in tkr_embed.harmony.tokenizer)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Tokenizer(Protocol):
    vocab_size: int
    eos_token_ids: tuple[int, ...]  # the harmony stop tokens: <|return|>, <|call|> (and <|end|>?)

    def encode(self, text: str) -> list[int]:
        """Plain text to ids; special-token text is encoded as ordinary text."""

    def decode(self, token_ids: Sequence[int]) -> str:
        """Ids to text, special tokens rendered as their text; invalid UTF-8 replaced."""

    def decode_bytes(self, token_ids: Sequence[int]) -> bytes:
        """Ids to raw bytes (for incremental decoding that never splits a UTF-8 character)."""
