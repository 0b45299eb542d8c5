"""`tool_choice: "required"` at decode time: the recipient the model writes is one of the declared functions.

The forced prefix stops at `<|channel|>commentary to=functions` (render.py). From there the model may only
write `.NAME` for a declared NAME, then the rest of the header harmony allows (` <|constrain|>json<|message|>`
or `<|message|>`), each as our tokenizer encodes it; after `<|message|>` the arguments are free. This is a
`TokenConstraint` (tkr_embed/engine/constraints.py) that the engine applies without knowing harmony.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from openai_harmony import HarmonyEncoding

from tkr_embed.engine.constraints import FREE_FOREVER
from tkr_embed.harmony.special_tokens import MESSAGE
from tkr_embed.harmony.tokenizer import encode_with_specials

# What harmony allows between a recipient and the body, in the order gpt-oss prefers: a JSON content type, or none.
HEADER_TAILS = (" <|constrain|>json<|message|>", "<|message|>")


@dataclass(frozen=True)
class OneOfTokenSequences:
    """The next tokens spell exactly one of `sequences`, then anything.

    Picklable and compared by value (the response cache keys on it). No sequence may be a proper prefix of
    another: where one ends, the constraint lets everything through.
    """

    sequences: tuple[tuple[int, ...], ...]

    def start(self) -> _SequencesState:
        return _SequencesState(self.sequences)


class _SequencesState:
    """The sequences still matching what was generated, walked in step: at position p the allowed ids are
    their p-th tokens (a trie's children, without building the trie)."""

    def __init__(self, sequences: tuple[tuple[int, ...], ...]) -> None:
        self._live = sequences
        self._position = 0

    def free_tokens_ahead(self) -> int:
        return FREE_FOREVER if self._live is None else 0

    def allowed_tokens(self) -> list[int]:
        assert self._live is not None, "asked only while the state restricts"
        return sorted({sequence[self._position] for sequence in self._live})

    def advance(self, token_id: int) -> None:
        if self._live is None:
            return
        position = self._position
        live = tuple(sequence for sequence in self._live if sequence[position] == token_id)
        self._position = position + 1
        # Done once a sequence is complete; an id outside every sequence (never sampled) frees the rest too.
        self._live = live if live and all(len(sequence) > self._position for sequence in live) else None


def recipient_constraint(encoding: HarmonyEncoding, function_names: Iterable[str]) -> OneOfTokenSequences:
    """After `to=functions`: `.NAME` of a declared function, then a header tail, as token ids."""
    tails = [encode_with_specials(encoding, tail, {"<|constrain|>", "<|message|>"}) for tail in HEADER_TAILS]
    assert all(tail[-1] == MESSAGE for tail in tails), "every tail ends the header, so no sequence prefixes another"
    sequences = {
        (*encoding.encode(f".{name}", disallowed_special=()), *tail) for name in function_names for tail in tails
    }
    return OneOfTokenSequences(tuple(sorted(sequences)))
