"""The server's SQL database: URL resolution, async engine (SQLite WAL or PostgreSQL), the schema brought up to
date at start-up by the migrations (tkr_embed/migrations).

Keys, usage and stored responses live here so that several stateless replicas can share them (PostgreSQL), while a
single server needs nothing but a file in the data folder (SQLite, WAL, busy timeout).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

DATA_DIR_ENV = "GENERATION_DATA_DIR"
DATABASE_URL_ENV = "GENERATION_DATABASE_URL"
DEFAULT_DATA_DIR = "./data"
DATABASE_FILE_NAME = "tkr-embed.db"
SQLITE_BUSY_TIMEOUT_MS = 5000
# Every module that defines tables: the one list of what the schema holds.
TABLE_MODULES = ("tkr_embed.security.models", "tkr_embed.storage.models")


class Base(DeclarativeBase):
    """Declarative base of every table the server owns."""


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data folder: the argument, else GENERATION_DATA_DIR, else ./data."""
    return Path(data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR))


def resolve_database_url(database_url: str | None = None, data_dir: str | Path | None = None) -> str:
    """An async SQLAlchemy URL: the argument, else GENERATION_DATABASE_URL, else SQLite in the data folder.

    Plain driver-less URLs are given their async driver (`sqlite://` → aiosqlite,
    `postgresql://` → asyncpg) so that one URL works for the server and for operators.
    """
    url = database_url or os.environ.get(DATABASE_URL_ENV) or ""
    if not url:
        path = resolve_data_dir(data_dir) / DATABASE_FILE_NAME
        return f"sqlite+aiosqlite:///{path}"
    for plain, with_driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return with_driver + url[len(plain) :]
    return url


def import_table_modules() -> None:
    """Import every module that defines tables: their classes register themselves on Base.metadata."""
    for module in TABLE_MODULES:
        importlib.import_module(module)


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL; None for another database or one in memory."""
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix) or ":memory:" in url:
        return None
    return Path(url[len(prefix) :].split("?", 1)[0])


def _enable_sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 (DBAPI objects)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Database:
    """One async engine and its session factory; `await start()` creates or upgrades the tables."""

    def __init__(self, url: str) -> None:
        self.url = url
        database_file = sqlite_file(url)
        if database_file is not None:
            database_file.parent.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        if url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _enable_sqlite_pragmas)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_env(cls, database_url: str | None = None, data_dir: str | Path | None = None) -> Database:
        return cls(resolve_database_url(database_url, data_dir))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def start(self) -> None:
        """Bring the schema to the newest revision (idempotent, safe for several processes starting at once)."""
        from tkr_embed.migrations import upgrade  # Alembic is needed only here

        import_table_modules()
        await upgrade(self)

    async def close(self) -> None:
        await self.engine.dispose()
