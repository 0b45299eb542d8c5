"""A model served under several names (`--served-model-name primary alias`): a request may name any of them, every
answer carries the first, /v1/models lists them all (the first first), and any other name is 404."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fake_engine import FakeEngine
from live_server import live_server

from tkr_embed.api.server import create_app
from tkr_embed.config import Settings
from tkr_embed.harmony.tokenizer import get_tokenizer

NAMES = ["primary", "org/alias-b", "alias-c"]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tokenizer = get_tokenizer()
    engine = FakeEngine(decode=tokenizer.decode)
    settings = Settings(
        model={"name": NAMES[0], "aliases": NAMES[1:]},
        storage={"data_dir": str(tmp_path_factory.mktemp("names"))},
    )
    with live_server(create_app(settings, engine, tokenizer=tokenizer, model_path="/models/fake")) as base:
        yield base


def test_models_lists_every_name_the_first_first(url: str) -> None:
    listed = httpx.get(url + "/v1/models").json()["data"]
    assert [card["id"] for card in listed] == NAMES
    assert httpx.get(url + "/v1/models/org/alias-b").json()["id"] == "org/alias-b"
    assert httpx.get(url + "/v1/models/gpt-oss-fake").status_code == 404  # the checkpoint's own name is not served


@pytest.mark.parametrize("name", NAMES)
def test_any_name_is_accepted_and_answers_carry_the_first(url: str, name: str) -> None:
    chat = httpx.post(
        url + "/v1/chat/completions",
        json={"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert chat.status_code == 200 and chat.json()["model"] == "primary"
    completion = httpx.post(url + "/v1/completions", json={"model": name, "prompt": "hi", "max_tokens": 2})
    assert completion.status_code == 200 and completion.json()["model"] == "primary"
    response = httpx.post(url + "/v1/responses", json={"model": name, "input": "hi", "max_output_tokens": 2})
    assert response.status_code == 200 and response.json()["model"] == "primary"


def test_another_name_is_not_found_and_the_error_lists_the_served_ones(url: str) -> None:
    response = httpx.post(url + "/v1/completions", json={"model": "gpt-4", "prompt": "hi", "max_tokens": 2})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert all(repr(name) in error["message"] for name in NAMES)
