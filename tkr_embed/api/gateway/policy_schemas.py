"""Wire types of a key's budgets, reasoning policy and rotation, of /admin/usage and of /admin/audit."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tkr_embed.security.audit import AuditEntry
from tkr_embed.security.budgets import BudgetExceeded, PeriodUse, TokenUse
from tkr_embed.security.keys import KeyInfo
from tkr_embed.security.policy import Budget, KeyBudgets, ReasoningPolicy
from tkr_embed.security.store import MAX_GRACE_PERIOD_S
from tkr_embed.security.usage import DailyUsage

Effort = Literal["low", "medium", "high"]


class BudgetBody(BaseModel):
    """Tokens allowed in one period; null: no budget of that kind."""

    model_config = ConfigDict(extra="forbid")

    prompt: int | None = Field(None, ge=1)
    completion: int | None = Field(None, ge=1)
    reasoning: int | None = Field(None, ge=1)
    total: int | None = Field(None, ge=1)

    def to_budget(self) -> Budget:
        return Budget(**self.model_dump())


class BudgetsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day: BudgetBody = Field(default_factory=BudgetBody)
    month: BudgetBody = Field(default_factory=BudgetBody)

    def to_budgets(self) -> KeyBudgets:
        return KeyBudgets(day=self.day.to_budget(), month=self.month.to_budget())

    @classmethod
    def of(cls, budgets: KeyBudgets) -> BudgetsBody:
        return cls.model_validate(budgets.to_dict())


class ReasoningPolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed_efforts: list[Effort] | None = Field(None, min_length=1)
    above: Literal["step_down", "refuse"] = "step_down"
    max_reasoning_tokens: int | None = Field(None, ge=1)

    def to_policy(self) -> ReasoningPolicy:
        return ReasoningPolicy.parse(self.model_dump())

    @classmethod
    def of(cls, policy: ReasoningPolicy) -> ReasoningPolicyBody:
        return cls.model_validate(policy.to_dict())


class RotationView(BaseModel):
    previous_key_hint: str
    previous_expires_at: datetime

    @classmethod
    def of(cls, info: KeyInfo, now: datetime) -> RotationView | None:
        """The previous secret while it still works; None otherwise."""
        if info.previous_hint is None or info.previous_expires_at is None or info.previous_expires_at <= now:
            return None
        return cls(previous_key_hint=info.previous_hint, previous_expires_at=info.previous_expires_at)


class RotateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_period_s: int = Field(3600, ge=0, le=MAX_GRACE_PERIOD_S)


class BudgetExceededView(BaseModel):
    period: Literal["day", "month"]
    kind: Literal["prompt", "completion", "reasoning", "total"]
    limit: int
    used: int
    resets_at: datetime

    @classmethod
    def of(cls, spent: BudgetExceeded) -> BudgetExceededView:
        return cls(period=spent.period, kind=spent.kind, limit=spent.limit, used=spent.used, resets_at=spent.resets_at)


class TokenUseView(BaseModel):
    prompt: int
    completion: int
    reasoning: int
    total: int

    @classmethod
    def of(cls, use: TokenUse) -> TokenUseView:
        return cls(**use.to_dict())


class PeriodBudgetView(BaseModel):
    used: TokenUseView
    limit: BudgetBody
    resets_at: datetime


class KeyBudgetView(BaseModel):
    day: PeriodBudgetView
    month: PeriodBudgetView

    @classmethod
    def of(cls, budgets: KeyBudgets, use: PeriodUse) -> KeyBudgetView:
        return cls(
            day=PeriodBudgetView(
                used=TokenUseView.of(use.day), limit=BudgetBody(**vars(budgets.day)), resets_at=use.day_resets_at
            ),
            month=PeriodBudgetView(
                used=TokenUseView.of(use.month), limit=BudgetBody(**vars(budgets.month)), resets_at=use.month_resets_at
            ),
        )


class DayUsageView(BaseModel):
    day: date
    requests: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cache_hits: int

    @classmethod
    def of(cls, usage: DailyUsage) -> DayUsageView:
        totals = usage.totals
        return cls(
            day=usage.day,
            requests=totals.requests,
            prompt_tokens=totals.prompt_tokens,
            completion_tokens=totals.completion_tokens,
            reasoning_tokens=totals.reasoning_tokens,
            total_tokens=totals.total_tokens,
            cache_hits=totals.cache_hits,
        )


class KeyUsageView(BaseModel):
    key_id: str
    name: str | None  # None for a key id no longer in the database
    days: list[DayUsageView]
    budget: KeyBudgetView


class UsageList(BaseModel):
    object: Literal["list"] = "list"
    days: int
    data: list[KeyUsageView]


class AuditEntryView(BaseModel):
    id: int
    at: datetime
    actor: str
    client: str | None
    action: str
    target: str | None
    changes: dict[str, dict[str, Any]]

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryView:
        return cls(
            id=entry.id,
            at=entry.at,
            actor=entry.actor,
            client=entry.client,
            action=entry.action,
            target=entry.target,
            changes=entry.changes,
        )


class AuditList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditEntryView]
    has_more: bool
