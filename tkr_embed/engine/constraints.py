"""Constrained decoding: which token ids a sequence may generate next (no torch, harmony or grammar here).

A request carries a `TokenConstraint` in `SamplingParams.constraint`. Each of its sequences starts its own
`ConstraintState` (`Sequence.constraint_state`), advanced with every token the sequence generates. Before a
sampled token the scheduler asks the state whether that token is free (`free_tokens_ahead`); where it is not,
the step's `BatchEntry.allowed_tokens` holds a `PendingMask`, which the sampler resolves only once the forward
is queued on the device, so a grammar's mask (a millisecond of CPU) is computed while the forward runs. The
sampler gives every other id zero probability. What a constraint means (a harmony header, a JSON grammar) is
decided outside the engine, by whoever builds it.

A lookahead decode step is planned before the previous step's token is known: it needs the next two tokens free
whatever they turn out to be (`free_tokens_ahead() >= 2`). A constraint that is free through a long stretch
(a model's reasoning) says so and keeps lookahead on there; it turns lookahead off only around the tokens it
restricts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

# free_tokens_ahead() of a state that will never restrict again: the engine drops it
FREE_FOREVER = 1 << 62


class ConstraintState(Protocol):
    """One sequence's progress through a constraint."""

    def free_tokens_ahead(self) -> int:
        """How many of the next tokens may be any id whatever they turn out to be: 0 when the next token is
        restricted, FREE_FOREVER when no token will ever be restricted again.

        The engine plans a lookahead step on this count, before the token before it is known. A state whose
        next restriction depends on a token it cannot foresee (harmony: only `<|start|>` may follow `<|end|>`)
        either counts that token as restricted or, if it counts it free, accepts whatever token comes there.
        """

    def allowed_tokens(self) -> Sequence[int] | np.ndarray:
        """The ids the next token may take, asked only when `free_tokens_ahead()` is 0: a sequence of ids, or a
        packed bitmask (uint32 or int32 words, bit `i % 32` of word `i // 32` set for an allowed id `i`; ids past
        its end are not allowed). Never empty."""

    def advance(self, token_id: int) -> None:
        """Take the token the sequence generated (one the state allowed, when it restricted it)."""


class TokenConstraint(Protocol):
    """A constraint on what a request generates.

    It travels inside SamplingParams to the engine process, so it must be picklable; the response cache keys
    on SamplingParams by value (`dataclasses.asdict`), so it is best a dataclass of plain values. It is shared
    by the request's sequences (n > 1), so it holds no progress of its own: `start` gives each sequence a state.
    """

    def start(self) -> ConstraintState:
        """A fresh state, before the sequence's first generated token."""


class PendingMask:
    """The allowed tokens of one restricted step, computed on the first `resolve` (by the sampler, once the
    forward is queued) and kept. The state does not advance before the step's token is sampled."""

    __slots__ = ("_state", "_allowed")

    def __init__(self, state: ConstraintState) -> None:
        self._state = state
        self._allowed: tuple[int, ...] | np.ndarray | None = None

    def resolve(self) -> tuple[int, ...] | np.ndarray:
        """A tuple of ids, or the packed bitmask as uint32 words [ceil(V / 32)]."""
        if self._allowed is None:
            allowed = self._state.allowed_tokens()
            if isinstance(allowed, np.ndarray):
                self._allowed = np.ascontiguousarray(allowed).view(np.uint32).reshape(-1)
            else:
                self._allowed = tuple(allowed)
        return self._allowed

    @classmethod
    def of_ids(cls, token_ids: Sequence[int]) -> PendingMask:
        """A mask known already (tests, fixed id lists)."""
        mask = cls.__new__(cls)
        mask._state = None
        mask._allowed = tuple(token_ids)
        return mask
