"""SQL tables of the gateway: API keys (hashes only) and daily usage per key."""

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
