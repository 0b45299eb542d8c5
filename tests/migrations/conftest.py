"""Fixtures of the migration tests: a PostgreSQL cluster for the module and a fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from postgres_support import postgres_cluster_url
from sqlalchemy import text

from tkr_embed.db import Database, resolve_database_url
from tkr_embed.security.hashing import KeyHasher

TEST_SECRET = b"0123456789abcdef0123456789abcdef-test-secret"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    yield from postgres_cluster_url()


@pytest.fixture
async def fresh_postgres_url(postgres_url: str) -> AsyncIterator[str]:
    """The URL of a new, empty database on the cluster."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = Database(resolve_database_url(postgres_url))
    async with admin.engine.connect() as connection:
        await (await connection.execution_options(isolation_level="AUTOCOMMIT")).execute(
            text(f"CREATE DATABASE {name}")
        )
    await admin.close()
    yield postgres_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def hasher() -> KeyHasher:
    return KeyHasher(TEST_SECRET)
