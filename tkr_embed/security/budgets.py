"""Token budgets per key and UTC day / month: what has been used, and whether a new request may start.

What a key has used in a period is the larger of two counts that never include a request twice:
- the stored rows (`usage_daily`, the durable record) plus this process's usage not yet written to them
  (the recorder's buffer and the batch being written);
- with Redis, the key's counters for the period (`tkr:budget:<key>:<period>`), which every replica increments
  by each request's tokens once, when the request ends (`add`), at the moment it is buffered for the database
  (for keys with a budget: a key given one later is bounded by its stored rows until its counters catch up).
Each count is a lower bound of the truth; with Redis, the counters are exact across replicas whose usage is not
yet written. When Redis is down, or its counters were lost, the stored rows still bound the use from below.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy import select

from tkr_embed.db import Database
from tkr_embed.security.keys import KeyInfo, utcnow
from tkr_embed.security.models import UsageDailyRow
from tkr_embed.security.policy import BUDGET_KINDS, Budget
from tkr_embed.security.usage import UsageRecorder

logger = logging.getLogger(__name__)

DAY_COUNTER_TTL_S = 2 * 24 * 3600
MONTH_COUNTER_TTL_S = 32 * 24 * 3600
ERROR_LOG_INTERVAL_S = 10.0
_FIELDS = ("prompt", "completion", "reasoning")


@dataclass(frozen=True)
class TokenUse:
    prompt: int = 0
    completion: int = 0
    reasoning: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def of(self, kind: str) -> int:
        return self.total if kind == "total" else getattr(self, kind)

    def plus(self, other: TokenUse) -> TokenUse:
        return TokenUse(
            self.prompt + other.prompt, self.completion + other.completion, self.reasoning + other.reasoning
        )

    def at_least(self, other: TokenUse) -> TokenUse:
        return TokenUse(
            max(self.prompt, other.prompt), max(self.completion, other.completion), max(self.reasoning, other.reasoning)
        )

    def to_dict(self) -> dict[str, int]:
        return {kind: self.of(kind) for kind in BUDGET_KINDS}


@dataclass(frozen=True)
class PeriodUse:
    """A key's use in the current UTC day and month, and when each resets."""

    day: TokenUse
    month: TokenUse
    day_resets_at: datetime
    month_resets_at: datetime


@dataclass(frozen=True)
class BudgetExceeded:
    period: str  # "day" or "month"
    kind: str  # "prompt", "completion", "reasoning" or "total"
    limit: int
    used: int
    resets_at: datetime

    @property
    def message(self) -> str:
        period = "daily" if self.period == "day" else "monthly"
        return (
            f"the {period} {self.kind} token budget of this API key is spent ({self.used} of {self.limit}); "
            f"it resets at {self.resets_at.isoformat().replace('+00:00', 'Z')}"
        )


def period_bounds(now: datetime) -> tuple[date, date, datetime, datetime]:
    """(today, the month's first day, tomorrow 00:00 UTC, next month's first day 00:00 UTC)."""
    today = now.astimezone(UTC).date()
    first = today.replace(day=1)
    next_month = (first + timedelta(days=32)).replace(day=1)
    day_end = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    return today, first, day_end, datetime.combine(next_month, datetime.min.time(), UTC)


def _exceeded(budget: Budget, used: TokenUse, period: str, resets_at: datetime) -> list[BudgetExceeded]:
    spent = []
    for kind in BUDGET_KINDS:
        limit = getattr(budget, kind)
        if limit is not None and used.of(kind) >= limit:
            spent.append(BudgetExceeded(period, kind, limit, used.of(kind), resets_at))
    return spent


class BudgetLedger:
    """Reads a key's use per period and counts finished requests into the shared counters (with Redis)."""

    def __init__(
        self,
        db: Database,
        usage: UsageRecorder,
        redis: Redis | None = None,
        key_prefix: str = "tkr:budget",
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._usage = usage
        self._redis = redis
        self._prefix = key_prefix
        self._clock = clock
        self._error_logged_at: float | None = None

    def _counter_keys(self, key_id: str, today: date) -> tuple[str, str]:
        return f"{self._prefix}:{key_id}:{today.isoformat()}", f"{self._prefix}:{key_id}:{today.isoformat()[:7]}"

    async def add(self, key_id: str, at: datetime, prompt: int, completion: int, reasoning: int) -> None:
        """Count one finished request in the shared counters (nothing to do without Redis). Never raises."""
        if self._redis is None:
            return
        day_key, month_key = self._counter_keys(key_id, at.astimezone(UTC).date())
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key, ttl in ((day_key, DAY_COUNTER_TTL_S), (month_key, MONTH_COUNTER_TTL_S)):
                    for name, value in zip(_FIELDS, (prompt, completion, reasoning), strict=True):
                        pipe.hincrby(key, name, value)
                    pipe.expire(key, ttl)
                await pipe.execute()
        except Exception as error:  # the stored rows still count it
            self._log_error(error)

    async def used(self, key_id: str) -> PeriodUse:
        now = self._clock()
        today, first, day_end, month_end = period_bounds(now)
        query = select(UsageDailyRow).where(UsageDailyRow.key_id == key_id, UsageDailyRow.day >= first)
        async with self._db.sessions() as session:
            rows = (await session.scalars(query)).all()
        day, month = TokenUse(), TokenUse()
        for row in rows:
            use = TokenUse(row.prompt_tokens, row.completion_tokens, row.reasoning_tokens)
            month = month.plus(use)
            if row.day == today:
                day = day.plus(use)
        for event in self._usage.unwritten():
            if event.key_id != key_id or event.at.date() < first:
                continue
            use = TokenUse(event.prompt_tokens, event.completion_tokens, event.reasoning_tokens)
            month = month.plus(use)
            if event.at.date() == today:
                day = day.plus(use)
        shared = await self._shared(key_id, today)
        if shared is not None:
            day, month = day.at_least(shared[0]), month.at_least(shared[1])
        return PeriodUse(day, month, day_end, month_end)

    async def _shared(self, key_id: str, today: date) -> tuple[TokenUse, TokenUse] | None:
        if self._redis is None:
            return None
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in self._counter_keys(key_id, today):
                    pipe.hmget(key, *_FIELDS)
                day_values, month_values = await pipe.execute()
        except Exception as error:
            self._log_error(error)
            return None
        return tuple(TokenUse(*(int(value or 0) for value in values)) for values in (day_values, month_values))

    async def check(self, key: KeyInfo) -> BudgetExceeded | None:
        """None when the key may start a request; else the spent budget that resets last."""
        if not key.budgets.is_set:
            return None
        use = await self.used(key.id)
        spent = _exceeded(key.budgets.day, use.day, "day", use.day_resets_at) + _exceeded(
            key.budgets.month, use.month, "month", use.month_resets_at
        )
        return max(spent, key=lambda item: item.resets_at) if spent else None

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def _log_error(self, error: Exception) -> None:
        now = time.monotonic()
        if self._error_logged_at is not None and now - self._error_logged_at < ERROR_LOG_INTERVAL_S:
            return
        self._error_logged_at = now
        logger.error(
            "budget counters in redis unavailable (%s: %s); using the stored usage", type(error).__name__, error
        )
