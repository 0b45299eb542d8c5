"""Stored responses in the server's database: save, get and delete within the owner's reach, and the purge of
those past their retention.

A response belongs to the key that created it: `get` and `delete` of another owner's id behave as for an id that
does not exist, so a caller learns nothing of other tenants' ids. `save_soon` writes off the caller's task, for an
answer whose request is being cancelled (a stream the client left); `close` waits for those writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from tkr_embed.db import Database
from tkr_embed.storage.models import StoredResponseRow

logger = logging.getLogger(__name__)

PURGE_INTERVAL_S = 3600.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StoredResponse:
    """A stored response: the JSON shapes as they were returned (see StoredResponseRow)."""

    id: str
    owner: str
    created_at: datetime
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    history: list[dict[str, Any]]
    previous_response_id: str | None = None


def _to_row(stored: StoredResponse) -> StoredResponseRow:
    return StoredResponseRow(
        id=stored.id,
        owner=stored.owner,
        created_at=stored.created_at,
        status=str(stored.response.get("status", "")),
        previous_response_id=stored.previous_response_id,
        response=json.dumps(stored.response, separators=(",", ":")),
        input_items=json.dumps(stored.input_items, separators=(",", ":")),
        history=json.dumps(stored.history, separators=(",", ":")),
    )


def _from_row(row: StoredResponseRow) -> StoredResponse:
    created_at = row.created_at if row.created_at.tzinfo is not None else row.created_at.replace(tzinfo=UTC)
    return StoredResponse(
        id=row.id,
        owner=row.owner,
        created_at=created_at,
        response=json.loads(row.response),
        input_items=json.loads(row.input_items),
        history=json.loads(row.history),
        previous_response_id=row.previous_response_id,
    )


class ResponseStore:
    """Stored responses over SQLAlchemy. With `retention_days`, `start` runs a purge every `purge_interval_s`
    (on every replica: a purge deletes what is past its time and is harmless twice)."""

    def __init__(
        self,
        db: Database,
        retention_days: float | None = None,
        purge_interval_s: float = PURGE_INTERVAL_S,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self.retention_days = retention_days
        self._purge_interval_s = purge_interval_s
        self._clock = clock
        self._purging: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    async def save(self, stored: StoredResponse) -> None:
        """Insert the response; an id already stored is left as it is (a cached answer replayed with its id)."""
        try:
            async with self._db.sessions() as session, session.begin():
                if await session.get(StoredResponseRow, stored.id) is None:
                    session.add(_to_row(stored))
        except IntegrityError:
            pass  # another request stored the same id in between

    def save_soon(self, stored: StoredResponse) -> None:
        """Save in a task of its own, which a cancellation of the caller does not stop."""
        task = asyncio.get_running_loop().create_task(self._save_logged(stored), name="store-response")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _save_logged(self, stored: StoredResponse) -> None:
        try:
            await self.save(stored)
        except Exception:
            logger.exception("could not store response %s", stored.id)

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        """The response with this id if `owner` owns it, else None (unknown, deleted and foreign alike)."""
        async with self._db.sessions() as session:
            row = await session.get(StoredResponseRow, response_id)
        if row is None or row.owner != owner:
            return None
        return _from_row(row)

    async def delete(self, response_id: str, owner: str) -> bool:
        """Delete the response if `owner` owns it; whether it did."""
        async with self._db.sessions() as session, session.begin():
            result = await session.execute(
                delete(StoredResponseRow).where(StoredResponseRow.id == response_id, StoredResponseRow.owner == owner)
            )
        return bool(result.rowcount)

    async def purge(self, older_than_days: float | None = None) -> int:
        """Delete every response created more than `older_than_days` (default: the retention) ago; how many."""
        days = self.retention_days if older_than_days is None else older_than_days
        if days is None:
            return 0
        cutoff = self._clock() - timedelta(days=days)
        async with self._db.sessions() as session, session.begin():
            result = await session.execute(delete(StoredResponseRow).where(StoredResponseRow.created_at < cutoff))
        return int(result.rowcount or 0)

    async def start(self) -> None:
        if self.retention_days is not None and self._purging is None:
            self._purging = asyncio.get_running_loop().create_task(self._purge_forever(), name="purge-responses")

    async def _purge_forever(self) -> None:
        while True:
            try:
                purged = await self.purge()
                if purged:
                    logger.info("purged %d stored responses older than %s days", purged, self.retention_days)
            except Exception:
                logger.exception(
                    "the purge of stored responses failed; it runs again in %.0f s", self._purge_interval_s
                )
            await asyncio.sleep(self._purge_interval_s)

    async def close(self) -> None:
        if self._purging is not None:
            self._purging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purging
            self._purging = None
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
