"""Constrained decoding: which token ids a sequence may generate next (no torch, harmony or grammar here).

A request carries a `TokenConstraint` in `SamplingParams.constraint`. Each of its sequences starts its own
`ConstraintState` (`Sequence.constraint_state`), advanced with every token the sequence generates. A step's
`BatchEntry.allowed_tokens` holds a `PendingMask` for a sequence whose token may be restricted; the sampler
resolves every row's mask at once (`resolve_masks`) only once the forward is queued on the device, so the masks
(a grammar's take a fraction of a millisecond of CPU each) are computed while the forward runs, and a grammar
engine fills the rows of a whole step in parallel (`MaskFill`). The sampler gives every other id zero
probability. What a constraint means (a harmony header, a JSON grammar) is decided outside the engine, by
whoever builds it.

A lookahead decode step is planned and its forward queued before the previous step's token is known. For a
sequence whose token may be restricted there, the runner holds the step's sampling back until that token was
taken by the state (the engine postprocessed the previous step): the mask always sees every token before it.
The states take the previous step's tokens in one call (`advance_states`), so a grammar engine takes them all in
parallel (`DeferredAdvance`), as it fills the masks.
`free_tokens_ahead` says how far the state is free whatever the tokens turn out to be; a sequence free for both
tokens needs no mask at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# free_tokens_ahead() of a state that will never restrict again: the engine drops it
FREE_FOREVER = 1 << 62


def mask_words(vocab_size: int) -> int:
    """The int32 words of one row of a packed bitmask over `vocab_size` ids."""
    return -(-vocab_size // 32)


class MaskFiller(Protocol):
    """Writes many sequences' masks into one packed bitmask at once (a grammar engine, in parallel)."""

    def fill(self, jobs: Sequence[tuple[object, int]], words: np.ndarray) -> None:
        """For each (job, row): the allowed ids of that job's next token into row `row` of `words` (int32 words
        [rows, ceil(V / 32)], C-contiguous, bit `i % 32` of word `i // 32` set for an allowed id `i`). Each
        job's row must end up with at least one id set."""


@dataclass(frozen=True)
class MaskFill:
    """A mask `filler` writes straight into the step's bitmask, together with the other rows it fills."""

    filler: MaskFiller
    job: object


class BatchAdvancer(Protocol):
    """Makes many sequences' states take their tokens at once (a grammar engine, in parallel)."""

    def advance_all(self, jobs: Sequence[object]) -> None:
        """Each job's state takes that job's token, in one call."""


@dataclass(frozen=True)
class DeferredAdvance:
    """Work a state's `advance` hands back: `advancer` takes the token (`job`) with the step's other such work."""

    advancer: BatchAdvancer
    job: object


class ConstraintState(Protocol):
    """One sequence's progress through a constraint."""

    def free_tokens_ahead(self) -> int:
        """How many of the next tokens may be any id whatever they turn out to be: 0 when the next token is
        restricted, FREE_FOREVER when no token will ever be restricted again."""

    def allowed_tokens(self) -> Sequence[int] | np.ndarray | MaskFill:
        """The ids the next token may take, asked only when `free_tokens_ahead()` is 0: a sequence of ids, a
        packed bitmask (uint32 or int32 words, bit `i % 32` of word `i // 32` set for an allowed id `i`; ids past
        its end are not allowed), or a `MaskFill` that writes it. Never empty."""

    def advance(self, token_id: int) -> DeferredAdvance | None:
        """Take the token the sequence generated (one the state allowed, when it restricted it), or hand back a
        `DeferredAdvance` that takes it: until that is done the state must not be asked anything. Called through
        `advance_states`, which does that before it returns."""


class TokenConstraint(Protocol):
    """A constraint on what a request generates.

    It travels inside SamplingParams to the engine process, so it must be picklable; the response cache keys
    on SamplingParams by value (`dataclasses.asdict`), so it is best a dataclass of plain values. It is shared
    by the request's sequences (n > 1), so it holds no progress of its own: `start` gives each sequence a state.
    """

    def start(self) -> ConstraintState:
        """A fresh state, before the sequence's first generated token."""


def advance_states(pairs: Iterable[tuple[ConstraintState, int]]) -> None:
    """Each state takes its token; the tokens states deferred are taken by one `advance_all` call per advancer,
    in the pairs' order, before this returns."""
    deferred: dict[int, tuple[BatchAdvancer, list[object]]] = {}
    for state, token_id in pairs:
        work = state.advance(token_id)
        if work is not None:
            deferred.setdefault(id(work.advancer), (work.advancer, []))[1].append(work.job)
    for advancer, jobs in deferred.values():
        advancer.advance_all(jobs)


class PendingMask:
    """The allowed tokens of one step's token, asked of the state only when the mask is resolved: by then the
    state took every token before this one. Resolving it twice gives the same mask."""

    __slots__ = ("_state", "_resolved", "_allowed")

    def __init__(self, state: ConstraintState) -> None:
        self._state = state
        self._resolved = False
        self._allowed: tuple[int, ...] | np.ndarray | MaskFill | None = None

    def allowed(self) -> tuple[int, ...] | np.ndarray | MaskFill | None:
        """None when the state lets this token be anything."""
        if not self._resolved:
            self._resolved = True
            if self._state.free_tokens_ahead() == 0:
                allowed = self._state.allowed_tokens()
                if isinstance(allowed, np.ndarray):
                    self._allowed = np.ascontiguousarray(allowed).view(np.uint32).reshape(-1)
                elif isinstance(allowed, MaskFill):
                    self._allowed = allowed
                else:
                    self._allowed = tuple(allowed)
        return self._allowed

    @classmethod
    def of_ids(cls, token_ids: Sequence[int]) -> PendingMask:
        """A mask known already (tests, fixed id lists)."""
        mask = cls.__new__(cls)
        mask._state = None
        mask._resolved = True
        mask._allowed = tuple(token_ids)
        return mask


def resolve_masks(
    pending: Sequence[PendingMask | None], vocab_size: int, out: np.ndarray | None = None
) -> np.ndarray | None:
    """Every row's allowed ids as packed uint32 words [S, ceil(V / 32)] (all set for a free row), None when no row
    is restricted. Rows that a `MaskFiller` writes are filled by one call per filler. `out`: uint32 words of that
    shape to write into (page-locked memory the device copies from), else new ones."""
    allowed = [mask.allowed() if mask is not None else None for mask in pending]
    if all(mask is None for mask in allowed):
        return None
    num_words = mask_words(vocab_size)
    if out is None:
        words = np.zeros((len(allowed), num_words), dtype=np.uint32)
    else:
        assert out.shape == (len(allowed), num_words) and out.dtype == np.uint32
        words = out
        words.fill(0)
    fills: dict[int, tuple[MaskFiller, list[tuple[object, int]]]] = {}
    for row, mask in enumerate(allowed):
        if mask is None:
            words[row] = 0xFFFFFFFF
        elif isinstance(mask, MaskFill):
            fills.setdefault(id(mask.filler), (mask.filler, []))[1].append((mask.job, row))
        elif isinstance(mask, np.ndarray):
            width = min(num_words, mask.shape[0])
            words[row, :width] = mask[:width]
        else:
            ids = np.asarray(mask, dtype=np.int64)
            ids = ids[(ids >= 0) & (ids < vocab_size)]
            np.bitwise_or.at(words[row], ids >> 5, (np.uint32(1) << (ids & 31).astype(np.uint32)))
    for filler, jobs in fills.values():
        filler.fill(jobs, words.view(np.int32))
        if vocab_size % 32:  # ids past the vocabulary (a filler's own vocabulary may be wider) are never allowed
            words[[row for _, row in jobs], -1] &= np.uint32((1 << (vocab_size % 32)) - 1)
    return words
