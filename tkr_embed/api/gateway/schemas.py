"""Wire types of the admin API (/admin/api-keys, /admin/stats, /admin/config); budgets, policy, usage and the
audit log are in policy_schemas.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tkr_embed.api.gateway.policy_schemas import BudgetsBody, ReasoningPolicyBody, RotationView
from tkr_embed.cache.response_cache import CacheStats
from tkr_embed.engine.outputs import EngineStats
from tkr_embed.security.keys import CreatedKey, KeyInfo, KeyLimits
from tkr_embed.security.store import KeyUpdate


class KeyLimitsBody(BaseModel):
    """Per-key overrides of the global rate limits; null (or absent) keeps the global value."""

    model_config = ConfigDict(extra="forbid")

    burst: int | None = Field(None, ge=1)
    requests_per_minute: int | None = Field(None, ge=1)
    requests_per_hour: int | None = Field(None, ge=1)
    requests_per_day: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)

    def to_limits(self) -> KeyLimits:
        return KeyLimits(**self.model_dump())

    @classmethod
    def of(cls, limits: KeyLimits) -> KeyLimitsBody:
        return cls(**vars(limits))


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    permissions: list[str] | None = None  # default: generate:text, generate:chat, generate:stream
    expires_in_days: int | None = Field(None, ge=1, le=3650)
    limits: KeyLimitsBody | None = None
    budgets: BudgetsBody | None = None
    reasoning: ReasoningPolicyBody | None = None


class UpdateKeyRequest(BaseModel):
    """PATCH: a field given replaces the stored value whole; left out, it is unchanged; null clears it."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    permissions: list[str] | None = None
    limits: KeyLimitsBody | None = None
    budgets: BudgetsBody | None = None
    reasoning: ReasoningPolicyBody | None = None

    def to_update(self) -> KeyUpdate:
        given = self.model_fields_set
        limits, budgets, reasoning = (
            self.limits or KeyLimitsBody(),
            self.budgets or BudgetsBody(),
            self.reasoning or ReasoningPolicyBody(),
        )
        return KeyUpdate(
            name=self.name,
            permissions=self.permissions,
            limits=limits.to_limits() if "limits" in given else None,
            budgets=budgets.to_budgets() if "budgets" in given else None,
            reasoning=reasoning.to_policy() if "reasoning" in given else None,
        )


class KeyView(BaseModel):
    """A key as listed: never the secret nor its hash, only its first eight and last four characters."""

    id: str
    name: str
    key_hint: str
    permissions: list[str]
    created_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    active: bool
    limits: KeyLimitsBody
    budgets: BudgetsBody
    reasoning: ReasoningPolicyBody
    rotation: RotationView | None

    @classmethod
    def of(cls, info: KeyInfo, now: datetime) -> KeyView:
        return cls(**_view_fields(info, now))


def _view_fields(info: KeyInfo, now: datetime) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "key_hint": info.hint,
        "permissions": info.permission_names,
        "created_at": info.created_at,
        "expires_at": info.expires_at,
        "revoked_at": info.revoked_at,
        "last_used_at": info.last_used_at,
        "active": info.is_active(now),
        "limits": KeyLimitsBody.of(info.limits),
        "budgets": BudgetsBody.of(info.budgets),
        "reasoning": ReasoningPolicyBody.of(info.reasoning),
        "rotation": RotationView.of(info, now),
    }


class CreatedKeyResponse(KeyView):
    """The answer to POST /admin/api-keys and to a rotation: the only time `api_key` is ever shown."""

    api_key: str

    @classmethod
    def of(cls, created: CreatedKey, now: datetime) -> CreatedKeyResponse:
        return cls(api_key=created.api_key, **_view_fields(created.info, now))


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyView]


class KeyUsage(BaseModel):
    key_id: str
    name: str | None  # None for a key id no longer in the database
    requests: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cache_hits: int
    rate_limit_rejections: int = 0  # 429s answered to this key (every replica when Redis holds the limits)


class CacheStatsView(BaseModel):
    enabled: bool
    hits: int = 0
    misses: int = 0
    hit_rate: float = 0.0
    size: int = 0
    max_size: int = 0
    evictions: int = 0
    expirations: int = 0

    @classmethod
    def of(cls, stats: CacheStats | None) -> CacheStatsView:
        """None: the response cache is off."""
        if stats is None:
            return cls(enabled=False)
        return cls(
            enabled=True,
            hits=stats.hits,
            misses=stats.misses,
            hit_rate=stats.hit_rate,
            size=stats.size,
            max_size=stats.max_size,
            evictions=stats.evictions,
            expirations=stats.expirations,
        )


class RateLimitStatsView(BaseModel):
    enabled: bool
    storage: Literal["memory", "redis", "off"]
    rejections: int  # 429s over every key (shared through Redis; this process's in memory)


class EngineStatsView(BaseModel):
    running: int
    waiting: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_cache_usage: float
    prefix_cache_hit_rate: float
    prompt_tokens_prefilled: int
    tokens_decoded: int
    requests_finished: int
    preemptions: int
    steps: int
    step_phase_seconds: dict[str, float]

    @classmethod
    def of(cls, stats: EngineStats) -> EngineStatsView:
        return cls(
            running=stats.running,
            waiting=stats.waiting,
            kv_blocks_total=stats.kv_blocks_total,
            kv_blocks_used=stats.kv_blocks_used,
            kv_cache_usage=stats.kv_usage,
            prefix_cache_hit_rate=stats.prefix_cache_hit_rate,
            prompt_tokens_prefilled=stats.prompt_tokens_prefilled,
            tokens_decoded=stats.tokens_decoded,
            requests_finished=stats.requests_finished,
            preemptions=stats.preemptions,
            steps=stats.steps,
            step_phase_seconds=dict(stats.step_phase_seconds),
        )


class StatsResponse(BaseModel):
    uptime_s: float
    cache: CacheStatsView
    rate_limit: RateLimitStatsView
    usage: list[KeyUsage]
    engine: EngineStatsView | None


class ConfigResponse(BaseModel):
    """The running configuration; secrets (keys, passwords in URLs) are replaced by [REDACTED]."""

    config: dict[str, Any]
