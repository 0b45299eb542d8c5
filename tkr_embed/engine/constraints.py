"""Constrained decoding: which token ids a sequence may generate next (no torch, harmony or grammar here).

A request carries a `TokenConstraint` in `SamplingParams.constraint`. Each of its sequences starts its own
`ConstraintState` (`Sequence.constraint_state`), advanced with every token the sequence generates. Before each
sampled token the scheduler asks the state for the allowed ids and hands them to the sampler in
`BatchEntry.allowed_token_ids`; the sampler gives every other id zero probability. What a constraint means
(a harmony header, a JSON grammar) is decided outside the engine, by whoever builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class ConstraintState(Protocol):
    """One sequence's progress through a constraint."""

    def allowed_token_ids(self) -> Sequence[int] | None:
        """The ids the next token may take, or None for any id.

        Invariants: never empty; once None, None after any further tokens (the engine then stops asking,
        and a step may be scheduled before the previous step's token is known).
        """

    def advance(self, token_id: int) -> None:
        """Take the token the sequence generated (one the state allowed, unless it returned None)."""


class TokenConstraint(Protocol):
    """A constraint on what a request generates.

    It travels inside SamplingParams to the engine process, so it must be picklable; the response cache keys
    on SamplingParams by value (`dataclasses.asdict`), so it is best a dataclass of plain values. It is shared
    by the request's sequences (n > 1), so it holds no progress of its own: `start` gives each sequence a state.
    """

    def start(self) -> ConstraintState:
        """A fresh state, before the sequence's first generated token."""
