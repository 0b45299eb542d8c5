"""A key's token budgets and reasoning policy: what they hold, how they are stored (JSON) and checked.

Pure values: no database and no HTTP here. The store keeps them as JSON text on the key's row; the gateway
checks budgets against usage (budgets.py) and applies the policy to a request's effort (reasoning_policy.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tkr_embed.security.errors import GatewayInputError

EFFORTS: tuple[str, ...] = ("low", "medium", "high")  # ordered: each allows more reasoning than the one before
BUDGET_KINDS: tuple[str, ...] = ("prompt", "completion", "reasoning", "total")
BUDGET_PERIODS: tuple[str, ...] = ("day", "month")
AboveAction = Literal["step_down", "refuse"]
ABOVE_ACTIONS: tuple[str, ...] = ("step_down", "refuse")


def _positive_or_none(value: Any, param: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise GatewayInputError(f"{param} must be a positive integer or null", param)
    return value


@dataclass(frozen=True)
class Budget:
    """Tokens allowed in one period, per kind; None: no budget of that kind."""

    prompt: int | None = None
    completion: int | None = None
    reasoning: int | None = None
    total: int | None = None

    @property
    def is_set(self) -> bool:
        return any(getattr(self, kind) is not None for kind in BUDGET_KINDS)

    @classmethod
    def parse(cls, payload: Any, param: str) -> Budget:
        if payload is None:
            return cls()
        if not isinstance(payload, dict):
            raise GatewayInputError(f"{param} must be an object or null", param)
        unknown = sorted(set(payload) - set(BUDGET_KINDS))
        if unknown:
            raise GatewayInputError(f"unknown field {unknown[0]!r} in {param}", f"{param}.{unknown[0]}")
        return cls(**{kind: _positive_or_none(payload.get(kind), f"{param}.{kind}") for kind in BUDGET_KINDS})


@dataclass(frozen=True)
class KeyBudgets:
    """Token budgets per UTC day and per UTC calendar month."""

    day: Budget = field(default_factory=Budget)
    month: Budget = field(default_factory=Budget)

    @property
    def is_set(self) -> bool:
        return self.day.is_set or self.month.is_set

    def to_dict(self) -> dict[str, dict[str, int | None]]:
        return {"day": asdict(self.day), "month": asdict(self.month)}

    def to_json(self) -> str | None:
        return json.dumps(self.to_dict(), sort_keys=True) if self.is_set else None

    @classmethod
    def parse(cls, payload: Any, param: str = "budgets") -> KeyBudgets:
        """From the admin API's shape; raises GatewayInputError naming the bad field."""
        if payload is None:
            return cls()
        if not isinstance(payload, dict):
            raise GatewayInputError(f"{param} must be an object or null", param)
        unknown = sorted(set(payload) - set(BUDGET_PERIODS))
        if unknown:
            raise GatewayInputError(f"unknown field {unknown[0]!r} in {param}", f"{param}.{unknown[0]}")
        return cls(**{period: Budget.parse(payload.get(period), f"{param}.{period}") for period in BUDGET_PERIODS})

    @classmethod
    def from_json(cls, text: str | None) -> KeyBudgets:
        return cls.parse(json.loads(text)) if text else cls()


@dataclass(frozen=True)
class EffortDecision:
    """The effort a request runs at under the key's policy; `stepped_down` when it differs from the one asked."""

    requested: str
    applied: str

    @property
    def stepped_down(self) -> bool:
        return self.requested != self.applied


class EffortNotAllowed(Exception):
    """The policy refuses the effort asked for (`above: refuse`, or nothing allowed below it)."""

    def __init__(self, requested: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"reasoning effort {requested!r} is not allowed for this API key; allowed: {', '.join(allowed)}"
        )
        self.requested = requested
        self.allowed = allowed


@dataclass(frozen=True)
class ReasoningPolicy:
    """Which reasoning efforts a key may ask for, what happens above them, and a cap on reasoning tokens."""

    allowed_efforts: tuple[str, ...] | None = None  # None: every effort; else a non-empty subset, in EFFORTS order
    above: AboveAction = "step_down"
    max_reasoning_tokens: int | None = None

    @property
    def is_set(self) -> bool:
        return self.allowed_efforts is not None or self.max_reasoning_tokens is not None

    def decide(self, requested: str) -> EffortDecision:
        """The effort to run `requested` at; raises EffortNotAllowed when the policy refuses it."""
        allowed = self.allowed_efforts
        if allowed is None or requested in allowed:
            return EffortDecision(requested, requested)
        rank = EFFORTS.index(requested) if requested in EFFORTS else len(EFFORTS)
        below = [effort for effort in allowed if EFFORTS.index(effort) < rank]
        if self.above == "refuse" or not below:
            raise EffortNotAllowed(requested, allowed)
        return EffortDecision(requested, below[-1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed_efforts": list(self.allowed_efforts) if self.allowed_efforts is not None else None,
            "above": self.above,
            "max_reasoning_tokens": self.max_reasoning_tokens,
        }

    def to_json(self) -> str | None:
        return json.dumps(self.to_dict(), sort_keys=True) if self.is_set else None

    @classmethod
    def parse(cls, payload: Any, param: str = "reasoning") -> ReasoningPolicy:
        """From the admin API's shape; raises GatewayInputError naming the bad field."""
        if payload is None:
            return cls()
        if not isinstance(payload, dict):
            raise GatewayInputError(f"{param} must be an object or null", param)
        unknown = sorted(set(payload) - {"allowed_efforts", "above", "max_reasoning_tokens"})
        if unknown:
            raise GatewayInputError(f"unknown field {unknown[0]!r} in {param}", f"{param}.{unknown[0]}")
        efforts = payload.get("allowed_efforts")
        allowed: tuple[str, ...] | None = None
        if efforts is not None:
            if not isinstance(efforts, list) or not efforts:
                raise GatewayInputError(
                    f"{param}.allowed_efforts must be a non-empty list of {', '.join(EFFORTS)}, or null",
                    f"{param}.allowed_efforts",
                )
            for effort in efforts:
                if effort not in EFFORTS:
                    raise GatewayInputError(
                        f"unknown reasoning effort {effort!r}; allowed: {', '.join(EFFORTS)}",
                        f"{param}.allowed_efforts",
                    )
            allowed = tuple(effort for effort in EFFORTS if effort in efforts)
        above = payload.get("above", "step_down")
        if above not in ABOVE_ACTIONS:
            raise GatewayInputError(f"{param}.above must be one of {', '.join(ABOVE_ACTIONS)}", f"{param}.above")
        cap = _positive_or_none(payload.get("max_reasoning_tokens"), f"{param}.max_reasoning_tokens")
        return cls(allowed_efforts=allowed, above=above, max_reasoning_tokens=cap)

    @classmethod
    def from_json(cls, text: str | None) -> ReasoningPolicy:
        return cls.parse(json.loads(text)) if text else cls()
