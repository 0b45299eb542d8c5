"""A live server over the scripted fake engine, for the nasty-body regression tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))

from fake_engine import FakeEngine  # noqa: E402
from live_server import MAX_BODY_BYTES, live_server  # noqa: E402

from tkr_embed.api.server import create_app  # noqa: E402
from tkr_embed.config import Settings  # noqa: E402
from tkr_embed.harmony.tokenizer import get_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeEngine]]:
    tok = get_tokenizer()
    engine = FakeEngine(decode=tok.decode)
    settings = Settings(
        server={"max_body_bytes": MAX_BODY_BYTES}, storage={"data_dir": str(tmp_path_factory.mktemp("fuzz"))}
    )
    with live_server(create_app(settings, engine, tokenizer=tok, model_path="/models/fake")) as url:
        yield url, engine
