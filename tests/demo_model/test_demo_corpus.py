"""The demo corpus's held-out split: new operand pairs, never new digit facts."""

from __future__ import annotations

import re
from collections import defaultdict

from tkr_embed.models.gpt_oss.demo_corpus import arithmetic_reasoning, is_held_out


def test_every_step_of_a_held_out_sum_is_a_step_training_shows() -> None:
    """Every equation of a held-out pair's reasoning (`17-9=8`, `35+3=38`) is one that training pairs also write:
    the held-out prompts test the digit-by-digit method on new numbers, not facts the model was never shown."""
    pairs = [
        (op, a, b)
        for op in "+-*"
        for a in range(100)
        for b in range(100)
        if not (op == "-" and a < b) and not (op == "*" and min(a, b) >= 10)
    ]
    held_out = [pair for pair in pairs if is_held_out(*pair)]
    assert 0.08 < len(held_out) / len(pairs) < 0.12
    trained_steps: dict[str, int] = defaultdict(int)
    for pair in pairs:
        if not is_held_out(*pair):
            for step in _steps(*pair):
                trained_steps[step] += 1
    unseen = {step for pair in held_out for step in _steps(*pair) if not trained_steps[step]}
    assert not unseen, sorted(unseen)[:10]


def _steps(op: str, a: int, b: int) -> list[str]:
    """The equations of the low-effort reasoning, each digit step's and each carry's."""
    reasoning, _ = arithmetic_reasoning(op, a, b, "low")
    return re.findall(r"\d+(?:[-+*]\d+)+=\d+", reasoning)
