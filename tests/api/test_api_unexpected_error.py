"""An error no handler expects is a 500 in the OpenAI error shape that carries X-Request-ID like every other answer."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fake_engine import FakeEngine
from live_server import live_server

from tkr_embed.api.server import create_app
from tkr_embed.config import Settings
from tkr_embed.harmony.tokenizer import get_tokenizer


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tok = get_tokenizer()
    app = create_app(
        Settings(storage={"data_dir": str(tmp_path_factory.mktemp("data"))}),
        FakeEngine(decode=tok.decode),
        tokenizer=tok,
        model_path="/models/fake",
    )

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    with live_server(app) as base_url:
        yield base_url


def test_an_unexpected_error_is_a_500_with_the_request_id(url: str) -> None:
    response = httpx.get(url + "/boom", headers={"X-Request-ID": "trace-me-42"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "trace-me-42"
    assert response.json()["error"] == {
        "message": "internal server error",
        "type": "server_error",
        "param": None,
        "code": None,
    }


def test_a_trailing_slash_is_not_redirected_to_the_host_the_client_named(url: str) -> None:
    response = httpx.get(url + "/health/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers
