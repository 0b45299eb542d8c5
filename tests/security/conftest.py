"""Fixtures of the security tests: a fresh SQLite database and key store (redis_url comes from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tkr_embed.db import Database, resolve_database_url
from tkr_embed.security.hashing import KeyHasher
from tkr_embed.security.store import KeyStore

TEST_SECRET = b"0123456789abcdef0123456789abcdef-test-secret"


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(resolve_database_url(data_dir=tmp_path))
    await db.start()
    yield db
    await db.close()


@pytest.fixture
def hasher() -> KeyHasher:
    return KeyHasher(TEST_SECRET)


@pytest.fixture
def key_store(database: Database, hasher: KeyHasher) -> KeyStore:
    return KeyStore(database, hasher)
