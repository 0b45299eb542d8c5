"""A live server on the trained demo model (no model configured, as `make serve` starts it) and held-out prompts."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import torch
from openai.types.chat import ChatCompletion

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))

from demo_prompts import CONCURRENCY, MAX_TOKENS, Ask  # noqa: E402
from live_server import live_server  # noqa: E402

from tkr_embed.api.server import create_app  # noqa: E402
from tkr_embed.config import Settings  # noqa: E402
from tkr_embed.models.gpt_oss.demo_corpus import Dialogue  # noqa: E402


@pytest.fixture(scope="package")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    torch.set_num_threads(2)
    settings = Settings(
        model={"device": "cpu"},  # no model path: the trained demo model is written and served
        engine={"max_num_seqs": CONCURRENCY, "max_waiting": 256, "kv_cache_blocks": 4096},
        storage={"data_dir": str(tmp_path_factory.mktemp("demo-data"))},
    )
    with live_server(create_app(settings)) as url:
        yield url, settings


@pytest.fixture(scope="package")
def client(demo_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=demo_server[0] + "/v1", api_key="unused", max_retries=0, timeout=600)


@pytest.fixture(scope="package")
def model_id(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


@pytest.fixture(scope="package")
def ask(client: openai.OpenAI, model_id: str) -> Ask:
    """ask(dialogue, **overrides): the dialogue's request, greedy, through the SDK."""

    def send(dialogue: Dialogue, **overrides) -> ChatCompletion:
        request = {**dialogue.request, **overrides}
        return client.chat.completions.create(model=model_id, temperature=0, max_tokens=MAX_TOKENS, **request)

    return send
