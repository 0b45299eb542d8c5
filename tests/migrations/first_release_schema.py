"""The tables as the first release declared them (before migrations existed), and rows as it wrote them.

`create_first_release_database` is that release's start-up path (`Base.metadata.create_all` over these
declarations, no alembic_version table), followed by the writes its key store and usage recorder made.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import BigInteger, Date, DateTime, Integer, String, Text, insert
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tkr_embed.db import Database
from tkr_embed.security.hashing import KeyHasher, display_parts, generate_api_key


class FirstReleaseBase(DeclarativeBase):
    pass


class ApiKeyRow(FirstReleaseBase):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    display_prefix: Mapped[str] = mapped_column(String(16))
    last_four: Mapped[str] = mapped_column(String(4))
    permissions: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    limit_burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    limit_requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    limit_requests_per_hour: Mapped[int | None] = mapped_column(Integer, nullable=True)
    limit_requests_per_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    limit_tokens_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)


class UsageDailyRow(FirstReleaseBase):
    __tablename__ = "usage_daily"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_hits: Mapped[int] = mapped_column(BigInteger, default=0)


class StoredResponseRow(FirstReleaseBase):
    __tablename__ = "stored_responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    status: Mapped[str] = mapped_column(String(16))
    previous_response_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    response: Mapped[str] = mapped_column(Text)
    input_items: Mapped[str] = mapped_column(Text)
    history: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True)
class FirstReleaseData:
    api_keys: dict[str, str]  # key id -> its secret
    key_rows: list[dict]
    usage_rows: list[dict]
    response_rows: list[dict]


async def create_first_release_database(db: Database, hasher: KeyHasher) -> FirstReleaseData:
    """The schema by create_all, then three keys (one revoked, one with limits), usage over three days and
    a stored response."""
    created = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    secrets = {f"key_{index:016x}": generate_api_key() for index in range(3)}
    key_rows = []
    for index, (key_id, secret) in enumerate(secrets.items()):
        prefix, last_four = display_parts(secret)
        key_rows.append(
            {
                "id": key_id,
                "name": f"tenant-{index}",
                "key_hash": hasher.digest(secret),
                "display_prefix": prefix,
                "last_four": last_four,
                "permissions": "generate:chat,generate:stream" if index else "admin",
                "created_at": created,
                "expires_at": None,
                "revoked_at": created if index == 2 else None,
                "last_used_at": created if index == 0 else None,
                "limit_burst": 7 if index == 1 else None,
                "limit_requests_per_minute": 60 if index == 1 else None,
                "limit_requests_per_hour": None,
                "limit_requests_per_day": None,
                "limit_tokens_per_minute": 5000 if index == 1 else None,
            }
        )
    usage_rows = [
        {
            "key_id": key_id,
            "day": date(2026, 11, day),
            "requests": day,
            "prompt_tokens": 100 * day,
            "completion_tokens": 40 * day,
            "reasoning_tokens": 10 * day,
            "cache_hits": day % 2,
        }
        for key_id in [*secrets, "master"]
        for day in (3, 4, 5)
    ]
    response_rows = [
        {
            "id": "resp_0123456789",
            "owner": next(iter(secrets)),
            "created_at": created,
            "status": "completed",
            "previous_response_id": None,
            "response": '{"id": "resp_0123456789", "output": []}',
            "input_items": "[]",
            "history": "[]",
        }
    ]
    async with db.engine.begin() as connection:
        await connection.run_sync(FirstReleaseBase.metadata.create_all)
        await connection.execute(insert(ApiKeyRow), key_rows)
        await connection.execute(insert(UsageDailyRow), usage_rows)
        await connection.execute(insert(StoredResponseRow), response_rows)
    return FirstReleaseData(secrets, key_rows, usage_rows, response_rows)
