"""Schema migrations of the server's database (Alembic), run in process: at start-up and by `tkr-embed db`.

`upgrade(db)` brings any database to the newest revision:
- a fresh database is created by the migrations themselves;
- a database the first release wrote with `create_all` (its tables, no `alembic_version`) is stamped at revision
  0001, which is exactly that schema, and upgraded from there: every row stays;
- several replicas starting together take turns: on PostgreSQL under a transaction-scoped advisory lock, on
  SQLite under an exclusive lock on a file beside the database. The first one upgrades; the others find the
  schema at head and do nothing. On PostgreSQL the whole upgrade is one transaction (its DDL is transactional).

No alembic.ini: the configuration is built here, and env.py runs on the connection handed to it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from tkr_embed.db import Database, sqlite_file

SCRIPT_LOCATION = str(Path(__file__).resolve().parent)
FIRST_RELEASE_REVISION = "0001"
FIRST_RELEASE_TABLES = frozenset({"api_keys", "usage_daily", "stored_responses"})
VERSION_TABLE = "alembic_version"
# pg_advisory_xact_lock's key: any constant shared by every replica ("tkr-embed" as 8 bytes).
ADVISORY_LOCK_KEY = int.from_bytes(b"tkr-embd", "big") & 0x7FFF_FFFF_FFFF_FFFF


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the migrations have one head"
    return head


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection) -> tuple[str | None, str]:
    """(the revision found, the revision left); the caller holds the lock and the transaction."""
    tables = set(inspect(connection).get_table_names())
    config = _config(connection)
    if VERSION_TABLE not in tables and FIRST_RELEASE_TABLES & tables:
        command.stamp(config, FIRST_RELEASE_REVISION)  # written by create_all: the first release's schema
    found = _current(connection)
    command.upgrade(config, "head")
    return found, _current(connection) or ""


@asynccontextmanager
async def _sqlite_file_lock(db: Database):  # noqa: ANN202 (an async context manager)
    database_file = sqlite_file(db.url)
    if database_file is None:  # in memory: one process only
        yield
        return
    lock_path = database_file.with_name(database_file.name + ".migrate-lock")
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


async def _run_locked(db: Database, work: Callable[[Connection], Any]) -> Any:
    if db.dialect == "postgresql":
        async with db.engine.begin() as connection:
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            return await connection.run_sync(work)
    async with _sqlite_file_lock(db), db.engine.begin() as connection:
        return await connection.run_sync(work)


async def upgrade(db: Database) -> tuple[str | None, str]:
    """Bring the schema to head; returns (the revision found, the revision now). Safe to run from several
    processes at once."""
    return await _run_locked(db, _upgrade)


async def current(db: Database) -> str | None:
    """The database's revision (None: no migration ever ran on it)."""
    async with db.engine.connect() as connection:
        return await connection.run_sync(_current)
