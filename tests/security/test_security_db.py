"""The SQL database: SQLite in the data folder (GENERATION_DATA_DIR, default ./data) in WAL mode with a
busy timeout; plain URLs get their async driver."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from tkr_embed.db import SQLITE_BUSY_TIMEOUT_MS, Database, resolve_database_url


async def test_sqlite_in_the_data_folder_uses_wal_and_a_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GENERATION_DATABASE_URL", raising=False)
    monkeypatch.setenv("GENERATION_DATA_DIR", str(tmp_path / "data"))
    url = resolve_database_url()
    assert url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'tkr-embed.db'}"
    db = Database(url)
    try:
        await db.start()
        async with db.sessions() as session:
            assert (await session.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await session.execute(text("PRAGMA busy_timeout"))).scalar() == SQLITE_BUSY_TIMEOUT_MS == 5000
            tables = {
                row[0] for row in await session.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
            }
        assert {"api_keys", "usage_daily"} <= tables
        assert (tmp_path / "data" / "tkr-embed.db").exists()
    finally:
        await db.close()


def test_plain_urls_get_their_async_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENERATION_DATABASE_URL", raising=False)
    assert resolve_database_url("postgresql://app:pw@db/tkr") == "postgresql+asyncpg://app:pw@db/tkr"
    assert resolve_database_url("postgres://db/tkr") == "postgresql+asyncpg://db/tkr"
    assert resolve_database_url("sqlite:////srv/tkr.db") == "sqlite+aiosqlite:////srv/tkr.db"
    monkeypatch.delenv("GENERATION_DATA_DIR", raising=False)
    assert resolve_database_url() == "sqlite+aiosqlite:///data/tkr-embed.db"


def _start_database(url: str) -> None:
    import asyncio

    async def start_and_close() -> None:
        db = Database(url)
        try:
            await db.start()
        finally:
            await db.close()

    asyncio.run(start_and_close())


def test_replicas_starting_together_on_one_new_database_all_start(tmp_path: Path) -> None:
    """Several processes creating the tables of one new SQLite file at once: none fails."""
    import multiprocessing

    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_start_database, args=(url,)) for _ in range(6)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * 6
