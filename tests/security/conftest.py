"""Fixtures of the gateway tests: a fresh SQLite database, key store and a local redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away redis-server on a free port (no persistence), stopped after the session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (`make redis` installs it)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)
