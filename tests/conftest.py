"""Shared fixtures: the tiny demo checkpoint, written once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Keep the 2-core CI machine responsive: one intra-op thread pool of at most 2 threads.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny gpt-oss checkpoint in the exact Hugging Face layout (MXFP4 experts)."""
    from tkr_embed.models.gpt_oss.demo import write_demo_checkpoint

    return write_demo_checkpoint(tmp_path_factory.mktemp("demo-model"), seed=0)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # An empty run (exit code 5) must fail, never pass unnoticed: the suite always has tests.
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away redis-server shared by the whole session (tests/redis_support.py), stopped at the end."""
    from redis_support import start_redis

    try:
        server = start_redis(tmp_path_factory.mktemp("redis"))
    except RuntimeError as error:
        pytest.fail(str(error))
    yield server.url
    server.stop()
