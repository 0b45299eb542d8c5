"""The audit log of admin actions: who did what to which key, from where, and what changed.

Admin actions are rare, so each entry is written at once, in its own transaction (unlike usage). An entry's
`changes` are built from the keys' public views (`key_fields`), which hold no secret and no hash.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from tkr_embed.db import Database
from tkr_embed.security.keys import KeyInfo, utcnow
from tkr_embed.security.models import AuditEntryRow

MAX_PAGE = 500


class AuditAction:
    KEY_CREATED = "key.created"
    KEY_UPDATED = "key.updated"
    KEY_ROTATED = "key.rotated"
    KEY_REVOKED = "key.revoked"
    CONFIG_VIEWED = "config.viewed"


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    client: str | None
    action: str
    target: str | None
    changes: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    has_more: bool


def key_fields(info: KeyInfo) -> dict[str, Any]:
    """The key's fields an admin can change, as JSON values (no secret, no digest)."""
    limits = vars(info.limits)
    return {
        "name": info.name,
        "permissions": info.permission_names,
        "limits": dict(limits) if any(value is not None for value in limits.values()) else None,
        "budgets": info.budgets.to_dict() if info.budgets.is_set else None,
        "reasoning": info.reasoning.to_dict() if info.reasoning.is_set else None,
    }


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{field: {"from", "to"}} for every field whose value differs."""
    return {
        name: {"from": before.get(name), "to": after.get(name)}
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class AuditLog:
    """Writes and pages the audit log table."""

    def __init__(self, db: Database, clock: Callable[[], datetime] = utcnow) -> None:
        self._db = db
        self._clock = clock

    async def record(
        self,
        *,
        actor: str,
        client: str | None,
        action: str,
        target: str | None = None,
        changes: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        row = AuditEntryRow(
            at=self._clock(),
            actor=actor,
            client=client,
            action=action,
            target=target,
            changes=json.dumps(changes or {}, sort_keys=True, default=str),
        )
        async with self._db.sessions() as session, session.begin():
            session.add(row)

    async def page(self, limit: int = 50, before: int | None = None) -> AuditPage:
        """Newest first: at most `limit` entries older than the entry `before` (an id)."""
        limit = max(1, min(limit, MAX_PAGE))
        query = select(AuditEntryRow).order_by(AuditEntryRow.id.desc()).limit(limit + 1)
        if before is not None:
            query = query.where(AuditEntryRow.id < before)
        async with self._db.sessions() as session:
            rows = (await session.scalars(query)).all()
        entries = [
            AuditEntry(
                id=row.id,
                at=_aware(row.at),
                actor=row.actor,
                client=row.client,
                action=row.action,
                target=row.target,
                changes=json.loads(row.changes),
            )
            for row in rows[:limit]
        ]
        return AuditPage(entries=entries, has_more=len(rows) > limit)
