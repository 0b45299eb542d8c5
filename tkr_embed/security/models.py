"""SQL tables of the gateway: API keys (hashes only), daily usage per key and the audit log of admin actions."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tkr_embed.db import Base


class ApiKeyRow(Base):
    """One API key. The key itself is never stored: only HMAC-SHA256(server secret, key)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    display_prefix: Mapped[str] = mapped_column(String(16))
    last_four: Mapped[str] = mapped_column(String(4))
    permissions: Mapped[str] = mapped_column(Text)  # comma-separated Permission values, sorted
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Per-key overrides of the global rate limits; NULL means "use the global value".
    limit_burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    limit_requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    limit_requests_per_hour: Mapped[int | None] = mapped_column(Integer, nullable=True)
    limit_requests_per_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    limit_tokens_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Token budgets and reasoning policy as JSON (tkr_embed/security/policy.py); NULL: none.
    budgets: Mapped[str | None] = mapped_column(Text, nullable=True)
    reasoning_policy: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The secret replaced by the last rotation, still accepted until previous_expires_at.
    previous_key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    previous_display_prefix: Mapped[str | None] = mapped_column(String(16), nullable=True)
    previous_last_four: Mapped[str | None] = mapped_column(String(4), nullable=True)
    previous_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UsageDailyRow(Base):
    """Usage of one key on one UTC day; totals are sums over days. `key_id` may be "master"."""

    __tablename__ = "usage_daily"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_hits: Mapped[int] = mapped_column(BigInteger, default=0)


class AuditEntryRow(Base):
    """One admin action: who (key id, "master"), when, from where, what, on what, and the fields it changed.

    `changes` is JSON: {field: {"from": old, "to": new}}. It never holds a secret nor a hash.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    client: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(64), nullable=True)
    changes: Mapped[str] = mapped_column(Text)
