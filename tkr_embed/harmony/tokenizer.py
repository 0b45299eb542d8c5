"""The harmony tokenizer (o200k_harmony via openai-harmony), loaded offline."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from openai_harmony import HarmonyEncoding, HarmonyEncodingName, load_harmony_encoding

from tkr_embed.harmony.chunked_encode import encode_plain
from tkr_embed.harmony.special_tokens import STOP_TOKEN_IDS, VOCAB_SIZE
from tkr_embed.harmony.vocab import ensure_vocab


@functools.cache
def get_encoding() -> HarmonyEncoding:
    """The gpt-oss harmony encoding, built from the checked offline vocabulary (cached)."""
    ensure_vocab()
    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def encode_with_specials(encoding: HarmonyEncoding, text: str, specials: AbstractSet[str]) -> list[int]:
    """`text` with the special-token strings in `specials` encoded as those tokens, any other as ordinary text
    (callers pass text they wrote: harmony headers around validated names). Passing no disallowed set skips
    openai-harmony's check for them, a regex over every special token built anew each call (milliseconds)."""
    return encoding.encode(text, allowed_special=specials, disallowed_special=())


@functools.cache
def get_tokenizer() -> HarmonyTokenizer:
    """The process-wide tokenizer (cached)."""
    return HarmonyTokenizer(get_encoding())


class HarmonyTokenizer:
    """Satisfies tkr_embed.engine.tokenizer.Tokenizer on top of a HarmonyEncoding."""

    vocab_size: int = VOCAB_SIZE
    eos_token_ids: tuple[int, ...] = STOP_TOKEN_IDS

    def __init__(self, encoding: HarmonyEncoding) -> None:
        self.encoding = encoding
        # Each token's bytes, once asked for: the detokenizer and the output parser ask for one token at a time,
        # every token of every stream, and a call into the encoder costs more than the lookup (at most one entry a
        # vocabulary id, a few MB).
        self._token_bytes: dict[int, bytes] = {}

    def encode(self, text: str) -> list[int]:
        """Plain text to ids; special-token text such as "<|end|>" is encoded as ordinary text. Long texts are
        encoded in pieces (chunked_encode.py), so other threads keep running meanwhile."""
        return encode_plain(self.encoding, text)

    def decode(self, token_ids: Sequence[int]) -> str:
        """Ids to text, special tokens rendered as their text; invalid UTF-8 replaced."""
        return self.decode_bytes(token_ids).decode("utf-8", errors="replace")

    def decode_bytes(self, token_ids: Sequence[int]) -> bytes:
        """Ids to raw bytes (callers decoding incrementally hold back incomplete characters)."""
        if len(token_ids) == 1:
            token_id = int(token_ids[0])
            data = self._token_bytes.get(token_id)
            if data is None:
                data = self._token_bytes[token_id] = self._decode_bytes([token_id])
            return data
        return self._decode_bytes(token_ids)

    def _decode_bytes(self, token_ids: Sequence[int]) -> bytes:
        ids = list(map(int, token_ids))
        if ids and not (0 <= min(ids) and max(ids) < self.vocab_size):
            outside = next(token_id for token_id in ids if not 0 <= token_id < self.vocab_size)
            raise ValueError(f"token id {outside} is outside the vocabulary [0, {self.vocab_size})")
        # The public decode() only returns text; the raw bytes come from the same Rust encoder.
        return bytes(self.encoding._inner.decode_bytes(ids))

    def is_special(self, token_id: int) -> bool:
        """True for harmony special and reserved tokens (<|start|>, <|reserved_200013|>, ...)."""
        return 0 <= token_id < self.vocab_size and self.encoding.is_special_token(token_id)
