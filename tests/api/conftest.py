"""Fixtures of the HTTP tests: a live uvicorn server over a scripted fake engine."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_engine import FakeEngine  # noqa: E402
from live_server import MAX_BODY_BYTES, live_server  # noqa: E402

from tkr_embed.api.server import create_app  # noqa: E402
from tkr_embed.config import Settings  # noqa: E402
from tkr_embed.harmony.tokenizer import HarmonyTokenizer, get_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer() -> HarmonyTokenizer:
    return get_tokenizer()


@pytest.fixture(scope="session")
def harmony(tokenizer: HarmonyTokenizer):
    """Token ids of harmony text, special tokens such as <|channel|> included."""

    def encode(text: str) -> list[int]:
        return tokenizer.encoding.encode(text, allowed_special="all")

    return encode


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeEngine]]:
    tok = get_tokenizer()
    engine = FakeEngine(decode=tok.decode)
    settings = Settings(
        server={"max_body_bytes": MAX_BODY_BYTES},
        storage={"data_dir": str(tmp_path_factory.mktemp("data"))},
    )
    app = create_app(settings, engine, tokenizer=tok, model_path="/models/fake")
    with live_server(app) as url:
        yield url, engine


@pytest.fixture
def fake(fake_server: tuple[str, FakeEngine]) -> FakeEngine:
    engine = fake_server[1]
    engine.reset()
    return engine


@pytest.fixture
def base_url(fake_server: tuple[str, FakeEngine]) -> str:
    return fake_server[0]
