"""One sequence's walk through a grammar: token masks as packed bitmasks, and the tokens it takes.

The grammar engine's tokenizer is built once per process from the same o200k vocabulary and harmony special
tokens the model uses (about a second), on a thread of its own while the engine builds
(`prepare_grammar_tokenizer`). Each sequence compiles its own matcher from the grammar text (under a millisecond):
copies of one compiled matcher would share its lexer state, which serialises the parallel fill (64 copies on 16
cores: 7.8 ms a step, against 2.0 ms for matchers of their own).

A mask inside a JSON string allows most of the vocabulary and takes a fraction of a millisecond; a step of many
sequences has them all filled in one call to the grammar engine's native thread pool (`GRAMMAR_FILLER`), while
the forward runs on the device. The step's sampled tokens are taken the same way, all matchers in one call
(`GrammarMatcher.advance` hands its token to `GRAMMAR_FILLER` through `advance_states`).
"""

from __future__ import annotations

import base64
import functools
import threading
from collections.abc import Sequence

import llguidance
import llguidance.numpy
import numpy as np

from tkr_embed.engine.constraints import DeferredAdvance, MaskFill, mask_words
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
NUM_MASK_WORDS = mask_words(VOCAB_SIZE)
# Fewer tokens than this are taken one by one: a matcher takes a token in a few µs (about 10 on average), and
# waking the grammar engine's thread pool and waiting for it costs tens of µs, more than it saves on so few.
PARALLEL_ADVANCE_MIN = 4


_TOKENIZER_LOCK = threading.Lock()


def grammar_tokenizer() -> llguidance.LLTokenizer:
    """The grammar engine's view of the model's vocabulary; its end-of-text token is `<|return|>`. Built once per
    process; a caller that comes while it is being built waits for that build."""
    with _TOKENIZER_LOCK:
        return _build_grammar_tokenizer()


def prepare_grammar_tokenizer() -> threading.Thread:
    """Build the grammar tokenizer on a thread of its own now: built on first use instead, it would stall the
    engine's step (every running stream) for about a second when the first grammar arrives."""
    thread = threading.Thread(target=grammar_tokenizer, name="grammar-tokenizer", daemon=True)
    thread.start()
    return thread


@functools.cache
def _build_grammar_tokenizer() -> llguidance.LLTokenizer:
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


class GrammarMatcher:
    """Where one message body stands in its grammar. The body ends with `end_token` once the grammar is complete.

    A token the grammar refused (never sampled under its mask) puts the matcher in an error state, where it
    allows only the end token: the engine is never left with nothing to sample.
    """

    def __init__(self, grammar: str, end_token: int) -> None:
        self._matcher = llguidance.LLMatcher(grammar_tokenizer(), grammar, log_level=0)
        self.end_token = end_token

    def mask_fill(self) -> MaskFill:
        """The next token's mask, to be written with the step's other grammar masks (`GRAMMAR_FILLER`)."""
        return MaskFill(GRAMMAR_FILLER, self)

    def mask(self) -> np.ndarray:
        """The next token's allowed ids as packed int32 words [ceil(V / 32)], on their own."""
        words = np.zeros((1, NUM_MASK_WORDS), dtype=np.int32)
        GRAMMAR_FILLER.fill([(self, 0)], words)
        return words[0]

    def advance(self, token_id: int) -> DeferredAdvance | None:
        """The token for `GRAMMAR_FILLER` to take with the step's other grammar tokens (`advance_states`); None for
        the end token, which the grammar does not take."""
        if token_id == self.end_token:
            return None
        return DeferredAdvance(GRAMMAR_FILLER, (self._matcher, token_id))


class GrammarFiller:
    """Fills the masks of many GrammarMatchers into one bitmask, and makes many take their tokens, in parallel on
    the grammar engine's thread pool (a `MaskFiller` and a `BatchAdvancer`)."""

    def __init__(self) -> None:
        self._executor: llguidance.LLExecutor | None = None
        self._lock = threading.Lock()

    def fill(self, jobs: Sequence[tuple[object, int]], words: np.ndarray) -> None:
        if words.shape[1] != NUM_MASK_WORDS:  # a narrower model vocabulary: fill at the grammar's width, then cut
            full = np.zeros((words.shape[0], NUM_MASK_WORDS), dtype=np.int32)
            self.fill(jobs, full)
            width = min(words.shape[1], NUM_MASK_WORDS)
            words[:, :width] = full[:, :width]
            return
        live: list[tuple[llguidance.LLMatcher, int]] = []
        for matcher, row in jobs:
            assert isinstance(matcher, GrammarMatcher)
            if not matcher._matcher.is_error():
                live.append((matcher._matcher, row))
        if len(live) == 1:
            llguidance.numpy.fill_next_token_bitmask(live[0][0], words, live[0][1])
        elif live:
            llguidance.numpy.fill_next_token_bitmask_par(self._pool(), live, words)
        for matcher, row in jobs:
            assert isinstance(matcher, GrammarMatcher)
            _finish_row(words[row], matcher)

    def advance_all(self, jobs: Sequence[object]) -> None:
        """Each (grammar engine matcher, token) job's matcher takes its token; a refused token leaves it in its
        error state."""
        if len(jobs) < PARALLEL_ADVANCE_MIN:
            for matcher, token_id in jobs:
                matcher.consume_token(token_id)
        else:
            self._pool().consume_token_par(list(jobs))

    def _pool(self) -> llguidance.LLExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = llguidance.LLExecutor()
            return self._executor


GRAMMAR_FILLER = GrammarFiller()


def _finish_row(words: np.ndarray, matcher: GrammarMatcher) -> None:
    """The grammar's mask made the body's: an error state or an empty mask allows only the end token, and a
    complete grammar ends with the body's end token rather than the grammar engine's end of text."""
    end_token = matcher.end_token
    if matcher._matcher.is_error():
        words[:] = 0
        _set_bit(words, end_token)
        return
    if end_token != RETURN and words[RETURN >> 5] & (1 << (RETURN & 31)):
        _clear_bit(words, RETURN)
        _set_bit(words, end_token)
    if not words.any():
        _set_bit(words, end_token)


def _set_bit(words: np.ndarray, token_id: int) -> None:
    words.view(np.uint32)[token_id >> 5] |= np.uint32(1 << (token_id & 31))


def _clear_bit(words: np.ndarray, token_id: int) -> None:
    words.view(np.uint32)[token_id >> 5] &= np.uint32(~(1 << (token_id & 31)) & 0xFFFFFFFF)
