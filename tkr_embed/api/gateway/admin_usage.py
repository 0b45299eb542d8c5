"""Admin routes that read what keys used and what admins did: /admin/usage and /admin/audit."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Query

from tkr_embed.api.gateway.policy_schemas import (
    AuditEntryView,
    AuditList,
    DayUsageView,
    KeyBudgetView,
    KeyUsageView,
    UsageList,
)
from tkr_embed.security.audit import MAX_PAGE
from tkr_embed.security.gateway import Gateway
from tkr_embed.security.keys import MASTER_KEY_ID, utcnow
from tkr_embed.security.policy import KeyBudgets
from tkr_embed.security.usage import usage_by_day

MAX_USAGE_DAYS = 366


def add_usage_routes(router: APIRouter, gateway: Gateway) -> None:
    @router.get("/usage", response_model=UsageList)
    async def usage(key_id: str | None = None, days: int = Query(30, ge=1, le=MAX_USAGE_DAYS)) -> UsageList:
        await gateway.usage.flush()  # this replica's buffered usage is in the rows the answer reads
        since = (utcnow() - timedelta(days=days - 1)).date()
        if key_id is not None:
            keys = {key_id: await gateway.keys.get(key_id)}
        else:
            keys = {info.id: info for info in await gateway.keys.list()}
        data = []
        for one_id in [*keys, MASTER_KEY_ID] if key_id is None else [key_id]:
            rows = [row for row in await usage_by_day(gateway.db, one_id, since=since)]
            info = keys.get(one_id)
            if info is None and not rows:
                continue  # the master key, never used in the period
            budgets = info.budgets if info is not None else KeyBudgets()
            use = await gateway.budgets.used(one_id)
            data.append(
                KeyUsageView(
                    key_id=one_id,
                    name=info.name if info is not None else "master",
                    days=[DayUsageView.of(row) for row in rows],
                    budget=KeyBudgetView.of(budgets, use),
                )
            )
        return UsageList(days=days, data=data)

    @router.get("/audit", response_model=AuditList)
    async def audit_log(limit: int = Query(50, ge=1, le=MAX_PAGE), before: int | None = Query(None, ge=1)) -> AuditList:
        page = await gateway.audit.page(limit, before)
        return AuditList(data=[AuditEntryView.of(entry) for entry in page.entries], has_more=page.has_more)
