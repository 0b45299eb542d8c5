"""One sequence's walk through a grammar: token masks as packed bitmasks, and the tokens it takes.

The grammar engine's tokenizer is built once per process from the same o200k vocabulary and harmony special
tokens the model uses (about a second); a compiled matcher is kept per grammar text and copied for each new
sequence (microseconds). The engine process builds both on first use.
"""

from __future__ import annotations

import base64
import functools
import threading
from collections import OrderedDict

import llguidance
import llguidance.numpy
import numpy as np

from tkr_embed.harmony.special_tokens import RETURN, STARTOFTEXT, VOCAB_SIZE
from tkr_embed.harmony.tokenizer import get_encoding
from tkr_embed.harmony.vocab import ensure_vocab

# o200k's pre-tokenizer, used by the grammar engine only when it tokenizes text itself (never for masks)
_O200K_PATTERN = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)
NUM_MASK_WORDS = -(-VOCAB_SIZE // 32)
_MATCHERS_KEPT = 256


@functools.cache
def grammar_tokenizer() -> llguidance.LLTokenizer:
    """The grammar engine's view of the model's vocabulary; its end-of-text token is `<|return|>`."""
    ranks: dict[bytes, int] = {}
    for line in ensure_vocab().read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    encoding = get_encoding()
    special = {encoding.decode([token_id]): token_id for token_id in range(STARTOFTEXT, VOCAB_SIZE)}
    return llguidance.LLTokenizer.from_tiktoken(
        encoder=ranks, special_tokens=special, pattern=_O200K_PATTERN, eos_token=RETURN, n_vocab=VOCAB_SIZE
    )


class _CompiledMatchers:
    """A fresh matcher per grammar text, kept for the most recent grammars (many requests share a schema)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._matchers: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()

    def new(self, grammar: str) -> llguidance.LLMatcher:
        with self._lock:
            template = self._matchers.get(grammar)
            if template is not None:
                self._matchers.move_to_end(grammar)
                return template.deep_copy()
        template = llguidance.LLMatcher(grammar_tokenizer(), grammar, log_level=0)
        with self._lock:
            self._matchers[grammar] = template
            while len(self._matchers) > self._capacity:
                self._matchers.popitem(last=False)
        return template.deep_copy()


_compiled = _CompiledMatchers(_MATCHERS_KEPT)


class GrammarMatcher:
    """Where one message body stands in its grammar. The body ends with `end_token` once the grammar is complete.

    A token the grammar refused (never sampled under its mask) puts the matcher in an error state, where it
    allows only the end token: the engine is never left with nothing to sample.
    """

    def __init__(self, grammar: str, end_token: int) -> None:
        self._matcher = _compiled.new(grammar)
        self.end_token = end_token

    def mask(self) -> np.ndarray:
        """The next token's allowed ids as packed int32 words [ceil(V / 32)]."""
        words = np.zeros(NUM_MASK_WORDS, dtype=np.int32)
        if self._matcher.is_error():
            return _set_bit(words, self.end_token)
        llguidance.numpy.fill_next_token_bitmask(self._matcher, words.reshape(1, -1))
        if self.end_token != RETURN and words[RETURN >> 5] & (1 << (RETURN & 31)):
            # the grammar is complete: its end of text is this body's end token
            _clear_bit(words, RETURN)
            _set_bit(words, self.end_token)
        if not words.any():
            return _set_bit(words, self.end_token)
        return words

    def advance(self, token_id: int) -> None:
        if token_id != self.end_token:
            self._matcher.consume_token(token_id)


def _set_bit(words: np.ndarray, token_id: int) -> np.ndarray:
    words.view(np.uint32)[token_id >> 5] |= np.uint32(1 << (token_id & 31))
    return words


def _clear_bit(words: np.ndarray, token_id: int) -> None:
    words.view(np.uint32)[token_id >> 5] &= np.uint32(~(1 << (token_id & 31)) & 0xFFFFFFFF)
