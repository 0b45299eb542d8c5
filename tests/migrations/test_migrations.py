"""Schema migrations: a database the first release wrote (create_all, no alembic_version) upgrades in place on
start-up and through `tkr-embed db upgrade` with every row kept, on SQLite and PostgreSQL; a fresh database is
created by the migrations; the migrations and the models agree; replicas upgrading at once do not collide."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from first_release_schema import FirstReleaseData, create_first_release_database
from sqlalchemy import inspect, text

from tkr_embed.cli import main
from tkr_embed.db import Base, Database, import_table_modules, resolve_database_url
from tkr_embed.migrations import current, head_revision
from tkr_embed.security.hashing import KeyHasher
from tkr_embed.security.keys import Authenticator
from tkr_embed.security.store import KeyStore
from tkr_embed.security.usage import usage_totals

NEW_KEY_COLUMNS = {
    "budgets",
    "reasoning_policy",
    "previous_key_hash",
    "previous_display_prefix",
    "previous_last_four",
    "previous_expires_at",
}


def _sqlite_url(folder: Path) -> str:
    return resolve_database_url(data_dir=folder)


async def _rows(db: Database, table: str, columns: list[str], order: str) -> list[tuple]:
    async with db.engine.connect() as connection:
        result = await connection.execute(text(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}"))
        return [tuple(row) for row in result]


async def _assert_upgraded_with_every_row(db: Database, data: FirstReleaseData, hasher: KeyHasher) -> None:
    assert await current(db) == head_revision() == "0002"
    key_columns = ["id", "name", "key_hash", "display_prefix", "last_four", "permissions", "limit_burst"]
    key_columns += ["limit_requests_per_minute", "limit_tokens_per_minute"]
    assert await _rows(db, "api_keys", key_columns, "id") == [
        tuple(row[name] for name in key_columns) for row in sorted(data.key_rows, key=lambda row: row["id"])
    ]
    usage_columns = ["key_id", "requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cache_hits"]
    assert await _rows(db, "usage_daily", usage_columns, "key_id, day") == [
        tuple(row[name] for name in usage_columns)
        for row in sorted(data.usage_rows, key=lambda row: (row["key_id"], row["day"]))
    ]
    assert await _rows(db, "stored_responses", ["id", "owner", "response"], "id") == [
        (row["id"], row["owner"], row["response"]) for row in data.response_rows
    ]
    async with db.engine.connect() as connection:
        columns = await connection.run_sync(lambda sync: {c["name"] for c in inspect(sync).get_columns("api_keys")})
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert NEW_KEY_COLUMNS <= columns and "audit_log" in tables
    assert await _rows(db, "api_keys", sorted(NEW_KEY_COLUMNS), "id") == [(None,) * len(NEW_KEY_COLUMNS)] * 3

    # The keys still work with their secrets (the revoked one stays refused) and carry their limits.
    store = KeyStore(db, hasher)
    authenticator = Authenticator(store, hasher)
    secrets = list(data.api_keys.items())
    first = await authenticator.authenticate(secrets[0][1])
    second = await authenticator.authenticate(secrets[1][1])
    assert first is not None and first.id == secrets[0][0] and first.is_admin
    assert second is not None and second.limits.burst == 7 and second.limits.tokens_per_minute == 5000
    assert not second.budgets.is_set and second.reasoning.allowed_efforts is None
    assert await authenticator.authenticate(secrets[2][1]) is None
    totals = await usage_totals(db)
    assert sorted(totals) == sorted([*data.api_keys, "master"])
    assert {t.prompt_tokens for t in totals.values()} == {100 * (3 + 4 + 5)}
    # New features work on the upgraded rows.
    await store.rotate(secrets[1][0], grace_period_s=60)
    assert await authenticator.authenticate(secrets[1][1]) is not None  # the old secret, in its grace period


async def _schema_diff(db: Database) -> list:
    import_table_modules()
    async with db.engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata)
        )


async def test_a_first_release_sqlite_database_upgrades_in_place_at_start_up(tmp_path: Path, hasher: KeyHasher) -> None:
    db = Database(_sqlite_url(tmp_path))
    data = await create_first_release_database(db, hasher)
    assert await current(db) is None
    await db.start()  # the server's start-up
    await _assert_upgraded_with_every_row(db, data, hasher)
    await db.close()


async def test_a_first_release_postgres_database_upgrades_in_place_at_start_up(
    fresh_postgres_url: str, hasher: KeyHasher
) -> None:
    db = Database(resolve_database_url(fresh_postgres_url))
    data = await create_first_release_database(db, hasher)
    await db.start()
    await _assert_upgraded_with_every_row(db, data, hasher)
    assert await _schema_diff(db) == []
    await db.close()


def test_tkr_embed_db_upgrade_migrates_the_servers_database(
    tmp_path: Path, hasher: KeyHasher, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GENERATION_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("GENERATION_DATABASE_URL", raising=False)

    async def create() -> FirstReleaseData:
        db = Database(_sqlite_url(tmp_path))
        try:
            return await create_first_release_database(db, hasher)
        finally:
            await db.close()

    data = asyncio.run(create())
    assert main(["db", "current"]) == 0
    assert "current: none" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == "upgraded from 0001 to 0002"
    assert main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == "already at 0002"

    async def check() -> None:
        db = Database(_sqlite_url(tmp_path))
        try:
            await _assert_upgraded_with_every_row(db, data, hasher)
        finally:
            await db.close()

    asyncio.run(check())


async def test_the_migrations_create_exactly_the_models_schema_on_sqlite(tmp_path: Path) -> None:
    db = Database(_sqlite_url(tmp_path))
    await db.start()
    assert await current(db) == head_revision()
    assert await _schema_diff(db) == []
    await db.close()


async def test_the_migrations_create_exactly_the_models_schema_on_postgres(fresh_postgres_url: str) -> None:
    db = Database(resolve_database_url(fresh_postgres_url))
    await db.start()
    assert await _schema_diff(db) == []
    await db.close()


async def _replicas_upgrade_once(url: str, hasher: KeyHasher) -> None:
    seed = Database(url)
    data = await create_first_release_database(seed, hasher)
    await seed.close()
    replicas = [Database(url) for _ in range(4)]
    await asyncio.gather(*(replica.start() for replica in replicas))
    await _assert_upgraded_with_every_row(replicas[0], data, hasher)
    assert await _rows(replicas[1], "alembic_version", ["version_num"], "version_num") == [("0002",)]
    for replica in replicas:
        await replica.close()


async def test_sqlite_replicas_starting_at_once_upgrade_one_database_once(tmp_path: Path, hasher: KeyHasher) -> None:
    await _replicas_upgrade_once(_sqlite_url(tmp_path), hasher)


async def test_postgres_replicas_starting_at_once_upgrade_one_database_once(
    fresh_postgres_url: str, hasher: KeyHasher
) -> None:
    await _replicas_upgrade_once(resolve_database_url(fresh_postgres_url), hasher)


def test_the_db_and_responses_commands_refuse_a_missing_settings_file(tmp_path, capsys):
    missing = str(tmp_path / "absent.yaml")
    for argv in (["db", "current", "--config", missing], ["responses", "purge", "--config", missing]):
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert error.startswith("tkr-embed: ") and "absent.yaml" in error, error
