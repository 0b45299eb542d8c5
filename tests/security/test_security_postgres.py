"""The key store, the authenticator and the usage recorder against a real PostgreSQL server (the URL
path of `storage.database_url`): hashes only, revocation, exact totals from two recorders at once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator

import pytest
from postgres_support import postgres_cluster_url
from sqlalchemy import text

from tkr_embed.db import Database, resolve_database_url
from tkr_embed.security.hashing import KeyHasher
from tkr_embed.security.keys import Authenticator
from tkr_embed.security.store import KeyStore
from tkr_embed.security.usage import UsageRecorder, UsageTotals, usage_by_day, usage_totals


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    yield from postgres_cluster_url()


@pytest.fixture
async def pg_database(postgres_url: str) -> AsyncIterator[Database]:
    db = Database(resolve_database_url(postgres_url))
    assert db.dialect == "postgresql"
    await db.start()
    async with db.sessions() as session, session.begin():
        await session.execute(text("TRUNCATE api_keys, usage_daily"))
    yield db
    await db.close()


async def test_keys_on_postgres(pg_database: Database, hasher: KeyHasher) -> None:
    store = KeyStore(pg_database, hasher)
    auth = Authenticator(store, hasher)
    created = await store.create("pg-tenant", permissions=["generate:chat"], expires_in_days=3)
    found = await auth.authenticate(created.api_key)
    assert found is not None and found.id == created.info.id and found.expires_at == created.info.expires_at
    assert await auth.authenticate(hasher.digest(created.api_key)) is None  # a stored hash opens nothing
    async with pg_database.sessions() as session:
        rows = (await session.execute(text("SELECT * FROM api_keys"))).all()
    dump = repr(rows)
    assert created.api_key not in dump and created.api_key[8:-4] not in dump and hasher.digest(created.api_key) in dump
    await store.revoke(created.info.id)
    assert await auth.authenticate(created.api_key) is None
    assert [info.name for info in await store.list(include_revoked=False)] == []


async def test_usage_totals_exact_on_postgres(pg_database: Database, hasher: KeyHasher) -> None:
    created = await KeyStore(pg_database, hasher).create("pg-usage")
    key_ids = [created.info.id, "master"]
    recorders = [UsageRecorder(pg_database, flush_interval_s=0.005, max_batch=7) for _ in range(2)]
    for recorder in recorders:
        await recorder.start()
    rng = random.Random(1)
    plan = [
        (key_ids[i % 2], rng.randint(1, 400), rng.randint(0, 200), rng.randint(0, 40), i % 4 == 0) for i in range(200)
    ]

    async def one(index: int) -> None:
        key_id, prompt, completion, reasoning, hit = plan[index]
        await asyncio.sleep(rng.random() * 0.02)
        recorders[index % 2].record(
            key_id, prompt_tokens=prompt, completion_tokens=completion, reasoning_tokens=reasoning, cache_hit=hit
        )

    await asyncio.gather(*(one(i) for i in range(200)))
    for recorder in recorders:
        await recorder.close()
    expected = {
        key_id: UsageTotals(
            sum(1 for k, *_ in plan if k == key_id),
            sum(p for k, p, *_ in plan if k == key_id),
            sum(c for k, _, c, *_ in plan if k == key_id),
            sum(r for k, _, _, r, _ in plan if k == key_id),
            sum(int(h) for k, *_, h in plan if k == key_id),
        )
        for key_id in key_ids
    }
    assert await usage_totals(pg_database) == expected
    assert len(await usage_by_day(pg_database, created.info.id)) == 1
    assert (await KeyStore(pg_database, hasher).get(created.info.id)).last_used_at is not None
