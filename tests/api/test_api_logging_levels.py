"""At DEBUG our loggers speak, while chatty libraries (aiosqlite logs every SQL call) stay at INFO."""

from __future__ import annotations

import logging

import pytest

from tkr_embed.api.server import QUIET_LIBRARY_LOGGERS, configure_logging
from tkr_embed.config import Settings


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    names = ("tkr_embed", "tkr_embed.api", *QUIET_LIBRARY_LOGGERS)
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    root.handlers[:] = saved_root[0]
    root.setLevel(saved_root[1])
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("level", ["debug", "warning"])
def test_library_loggers_stay_quiet_at_debug(restored_logging, level):
    configure_logging(Settings(server={"log_level": level}))
    ours = logging.getLogger("tkr_embed.api")
    assert ours.isEnabledFor(logging.DEBUG) is (level == "debug")
    for name in ("aiosqlite", "httpx", "httpcore", "asyncio", "multipart"):
        library = logging.getLogger(name)
        assert not library.isEnabledFor(logging.DEBUG), name
        assert library.isEnabledFor(logging.INFO) is (level == "debug"), name
