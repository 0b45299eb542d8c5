"""The stored-response table on SQLite: a response is its owner's alone, the purge deletes the rows past the
retention (by hand, periodically in the server, and through `tkr-embed responses purge`), and a write started while
the caller is cancelled still lands."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tkr_embed.cli import main
from tkr_embed.db import Database, resolve_database_url
from tkr_embed.storage.responses import ResponseStore, StoredResponse

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def stored(response_id: str, age_days: float, owner: str = "key_a") -> StoredResponse:
    return StoredResponse(
        id=response_id,
        owner=owner,
        created_at=NOW - timedelta(days=age_days),
        response={"id": response_id, "status": "completed", "output": []},
        input_items=[{"id": "msg_1", "type": "message", "role": "user", "content": [], "status": "completed"}],
        history=[],
    )


def row_ids(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "tkr-embed.db") as connection:
        return [row[0] for row in connection.execute("SELECT id FROM stored_responses ORDER BY created_at DESC")]


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(resolve_database_url(data_dir=tmp_path))
    await db.start()
    yield db
    await db.close()


async def test_a_response_is_its_owners_alone(database: Database, tmp_path: Path) -> None:
    store = ResponseStore(database)
    await store.save(stored("resp_1", 0))
    await store.save(stored("resp_1", 0, owner="key_b"))  # the same id again changes nothing
    found = await store.get("resp_1", "key_a")
    assert found is not None and found.input_items[0]["id"] == "msg_1" and found.created_at == NOW
    assert await store.get("resp_1", "key_b") is None and await store.get("resp_2", "key_a") is None
    assert await store.delete("resp_1", "key_b") is False and row_ids(tmp_path) == ["resp_1"]
    assert await store.delete("resp_1", "key_a") is True and row_ids(tmp_path) == []


async def test_the_purge_deletes_what_is_past_the_retention(database: Database, tmp_path: Path) -> None:
    store = ResponseStore(database, retention_days=30, clock=lambda: NOW)
    for response_id, age in (("resp_old", 40), ("resp_just_over", 30.01), ("resp_recent", 29.9), ("resp_new", 1)):
        await store.save(stored(response_id, age))
    assert await store.purge() == 2
    assert row_ids(tmp_path) == ["resp_new", "resp_recent"]
    assert await store.purge(older_than_days=7) == 1 and row_ids(tmp_path) == ["resp_new"]
    assert await ResponseStore(database, retention_days=None).purge() == 0  # no retention: kept until deleted


async def test_the_server_purges_periodically(database: Database, tmp_path: Path) -> None:
    store = ResponseStore(database, retention_days=30, purge_interval_s=0.05, clock=lambda: NOW)
    await store.save(stored("resp_new", 1))
    await store.start()
    try:
        await store.save(stored("resp_old", 31))  # stored after the first purge: the next one takes it
        for _ in range(200):
            if row_ids(tmp_path) == ["resp_new"]:
                break
            await asyncio.sleep(0.02)
        assert row_ids(tmp_path) == ["resp_new"]
    finally:
        await store.close()


async def test_a_write_started_by_a_cancelled_task_lands(database: Database, tmp_path: Path) -> None:
    store = ResponseStore(database)

    async def leaving() -> None:
        store.save_soon(stored("resp_interrupted", 0))
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(leaving())
    await store.close()  # waits for the write
    assert row_ids(tmp_path) == ["resp_interrupted"]


def test_the_cli_purges_with_the_configured_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no config file here: the environment alone
    for name in ("GENERATION_DATABASE_URL", "GENERATION_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GENERATION_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GENERATION_STORAGE__RESPONSES_RETENTION_DAYS", "10")
    now = datetime.now(UTC)

    async def fill() -> None:
        db = Database(resolve_database_url(data_dir=tmp_path / "data"))
        await db.start()
        store = ResponseStore(db)
        for response_id, age in (("resp_a", 20), ("resp_b", 5), ("resp_c", 1)):
            await store.save(StoredResponse(response_id, "key_a", now - timedelta(days=age), {}, [], []))
        await db.close()

    asyncio.run(fill())
    assert main(["responses", "purge"]) == 0
    assert capsys.readouterr().out == "purged 1 stored responses older than 10 days\n"
    assert row_ids(tmp_path / "data") == ["resp_c", "resp_b"]
    assert main(["responses", "purge", "--older-than-days", "2"]) == 0
    assert row_ids(tmp_path / "data") == ["resp_c"]
    with pytest.raises(SystemExit):
        main(["responses", "purge", "--older-than-days", "0"])
