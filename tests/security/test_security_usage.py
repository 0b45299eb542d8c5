"""Usage accounting: exact totals under concurrency, daily rows, last_used_at, flush on close and on failure."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta

from tkr_embed.db import Database
from tkr_embed.security.store import KeyStore
from tkr_embed.security.usage import UsageRecorder, UsageTotals, usage_by_day, usage_totals


async def test_totals_exact_after_200_concurrent_records(database: Database) -> None:
    # Two recorders on one database stand for two replicas; small batches force many interleaved flushes.
    recorders = [UsageRecorder(database, flush_interval_s=0.005, max_batch=7) for _ in range(2)]
    for recorder in recorders:
        await recorder.start()
    rng = random.Random(0)
    plan = [
        (f"key_{i % 3}", rng.randint(1, 500), rng.randint(0, 300), rng.randint(0, 50), i % 5 == 0) for i in range(200)
    ]

    async def one_request(index: int) -> None:
        key_id, prompt, completion, reasoning, hit = plan[index]
        await asyncio.sleep(rng.random() * 0.02)
        recorders[index % 2].record(
            key_id, prompt_tokens=prompt, completion_tokens=completion, reasoning_tokens=reasoning, cache_hit=hit
        )

    await asyncio.gather(*(one_request(i) for i in range(200)))
    for recorder in recorders:
        await recorder.close()
        assert recorder.pending == 0

    expected: dict[str, UsageTotals] = {}
    for key_id, prompt, completion, reasoning, hit in plan:
        old = expected.get(key_id, UsageTotals())
        expected[key_id] = UsageTotals(
            old.requests + 1,
            old.prompt_tokens + prompt,
            old.completion_tokens + completion,
            old.reasoning_tokens + reasoning,
            old.cache_hits + int(hit),
        )
    assert await usage_totals(database) == expected
    assert sum(t.requests for t in expected.values()) == 200
    assert await usage_totals(database, "key_1") == {"key_1": expected["key_1"]}


async def test_daily_rows_and_last_used(database: Database, key_store: KeyStore) -> None:
    created = await key_store.create("tenant")
    now = [datetime(2031, 5, 1, 23, 59, tzinfo=UTC)]
    recorder = UsageRecorder(database, clock=lambda: now[0])
    recorder.record(created.info.id, prompt_tokens=10, completion_tokens=5)
    now[0] += timedelta(minutes=2)
    recorder.record(created.info.id, prompt_tokens=1, completion_tokens=2, reasoning_tokens=3, cache_hit=True)
    assert await recorder.flush() == 2
    days = await usage_by_day(database, created.info.id)
    assert [(d.day, d.totals) for d in days] == [
        (date(2031, 5, 1), UsageTotals(1, 10, 5, 0, 0)),
        (date(2031, 5, 2), UsageTotals(1, 1, 2, 3, 1)),
    ]
    assert (await key_store.get(created.info.id)).last_used_at == now[0]


async def test_close_flushes_and_failed_flush_keeps_records(database: Database) -> None:
    recorder = UsageRecorder(database, flush_interval_s=60)
    await recorder.start()
    recorder.record("master", prompt_tokens=3, completion_tokens=4)
    await recorder.close()
    assert await usage_totals(database) == {"master": UsageTotals(1, 3, 4, 0, 0)}

    # A database whose tables were never created: every write fails.
    broken = Database(database.url.replace("tkr-embed.db", "never-started.db"))
    failing = UsageRecorder(broken)
    failing.record("master", prompt_tokens=1, completion_tokens=1)
    assert await failing.flush() == 0
    assert failing.pending == 1 and failing.flush_failures == 1
    await broken.start()
    assert await failing.flush() == 1 and failing.pending == 0
    assert await usage_totals(broken) == {"master": UsageTotals(1, 1, 1, 0, 0)}
    await broken.close()
