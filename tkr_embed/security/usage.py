"""Usage accounting per key, written in batches off the request path.

`UsageRecorder.record(...)` only appends to an in-memory buffer; a background task sums the buffer
per (key, UTC day) and adds it to the database with one upsert per row every `flush_interval_s` or
as soon as `max_batch` records wait. Additive upserts keep totals exact with any number of recorders
(replicas) writing to the same database; a failed flush puts its records back for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tkr_embed.db import Database
from tkr_embed.security.keys import utcnow
from tkr_embed.security.models import ApiKeyRow, UsageDailyRow

logger = logging.getLogger(__name__)

_COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cache_hits")


@dataclass(frozen=True)
class UsageEvent:
    """One finished request of one key."""

    key_id: str
    at: datetime
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0
    cache_hit: bool = False


@dataclass(frozen=True)
class UsageTotals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cache_hits: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class DailyUsage:
    key_id: str
    day: date
    totals: UsageTotals


def _aggregate(events: list[UsageEvent]) -> tuple[dict[tuple[str, date], list[int]], dict[str, datetime]]:
    """Per (key, day) counter sums in `_COUNTERS` order, and each key's latest use."""
    sums: dict[tuple[str, date], list[int]] = {}
    last_used: dict[str, datetime] = {}
    for event in events:
        row = sums.setdefault((event.key_id, event.at.date()), [0, 0, 0, 0, 0])
        row[0] += 1
        row[1] += event.prompt_tokens
        row[2] += event.completion_tokens
        row[3] += event.reasoning_tokens
        row[4] += int(event.cache_hit)
        if event.key_id not in last_used or last_used[event.key_id] < event.at:
            last_used[event.key_id] = event.at
    return sums, last_used


def _upsert_statement(dialect: str, key_id: str, day: date, counts: list[int]):  # noqa: ANN202 (dialect-specific)
    values = {"key_id": key_id, "day": day, **dict(zip(_COUNTERS, counts, strict=True))}
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise NotImplementedError(f"usage accounting supports SQLite and PostgreSQL, not {dialect}")
    statement = insert(UsageDailyRow).values(**values)
    table = UsageDailyRow.__table__
    return statement.on_conflict_do_update(
        index_elements=[table.c.key_id, table.c.day],
        set_={name: table.c[name] + statement.excluded[name] for name in _COUNTERS},
    )


async def _write(session: AsyncSession, dialect: str, events: list[UsageEvent]) -> None:
    sums, last_used = _aggregate(events)
    for (key_id, day), counts in sorted(sums.items()):
        await session.execute(_upsert_statement(dialect, key_id, day, counts))
    for key_id, moment in sorted(last_used.items()):
        await session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.id == key_id)
            .where(ApiKeyRow.last_used_at.is_(None) | (ApiKeyRow.last_used_at < moment))
            .values(last_used_at=moment)
        )


class UsageRecorder:
    """Buffers usage events and writes them in batches from one background task.

    Call `record` from the event loop thread; `await start()` once, `await close()` at shutdown
    (it flushes what is left).
    """

    def __init__(
        self,
        db: Database,
        flush_interval_s: float = 0.5,
        max_batch: int = 500,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if flush_interval_s <= 0 or max_batch < 1:
            raise ValueError("flush_interval_s must be positive and max_batch at least 1")
        self._db = db
        self._flush_interval_s = flush_interval_s
        self._max_batch = max_batch
        self._clock = clock
        self._buffer: list[UsageEvent] = []
        self._writing: list[UsageEvent] = []  # the batch a flush is writing, until its transaction commits
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.flush_failures = 0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def unwritten(self) -> list[UsageEvent]:
        """Every recorded event not yet committed to the database (budgets add them to the stored rows)."""
        return [*self._writing, *self._buffer]

    def record(
        self,
        key_id: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        reasoning_tokens: int = 0,
        cache_hit: bool = False,
    ) -> None:
        """Count one request (never blocks, never touches the database)."""
        self._buffer.append(
            UsageEvent(key_id, self._clock(), prompt_tokens, completion_tokens, reasoning_tokens, cache_hit)
        )
        if len(self._buffer) >= self._max_batch:
            self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def close(self) -> None:
        """Stop the background task (letting a flush in progress finish) and write every buffered record."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> int:
        """Write what is buffered now; returns the number of records written (0 if the write failed)."""
        async with self._flush_lock:
            events, self._buffer = self._buffer, []
            if not events:
                return 0
            self._writing = events
            try:
                async with self._db.sessions() as session:
                    async with session.begin():
                        await _write(session, self._db.dialect, events)
                    self._writing = []  # committed: the stored rows count them now
            except asyncio.CancelledError:
                self._writing = []
                self._buffer[:0] = events  # the transaction rolled back: nothing was counted
                raise
            except Exception:
                self._writing = []
                self.flush_failures += 1
                self._buffer[:0] = events  # keep them for the next flush: totals stay exact
                logger.exception("usage flush failed; %d records kept for the next attempt", len(events))
                return 0
            return len(events)

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_interval_s)
            self._wake.clear()
            await self.flush()


async def usage_totals(db: Database, key_id: str | None = None) -> dict[str, UsageTotals]:
    """Totals per key over every day (one key when `key_id` is given)."""
    table = UsageDailyRow.__table__
    query = select(table.c.key_id, *(func.sum(table.c[name]) for name in _COUNTERS)).group_by(table.c.key_id)
    if key_id is not None:
        query = query.where(table.c.key_id == key_id)
    async with db.sessions() as session:
        rows = (await session.execute(query)).all()
    return {row[0]: UsageTotals(*(int(value or 0) for value in row[1:])) for row in rows}


async def usage_by_day(db: Database, key_id: str, since: date | None = None) -> list[DailyUsage]:
    """One row per UTC day on which the key was used (from `since` on, if given), oldest first."""
    query = select(UsageDailyRow).where(UsageDailyRow.key_id == key_id).order_by(UsageDailyRow.day)
    if since is not None:
        query = query.where(UsageDailyRow.day >= since)
    async with db.sessions() as session:
        rows = (await session.scalars(query)).all()
    return [DailyUsage(row.key_id, row.day, UsageTotals(*(getattr(row, name) for name in _COUNTERS))) for row in rows]
