"""/tokenize, /detokenize and /tokenizer_info behind the gateway: a key always, generate:text to tokenize."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from gateway_support import GatewayServer, gateway_server

ROUTES = [
    ("POST", "/tokenize", {"prompt": "hi"}),
    ("POST", "/detokenize", {"tokens": [1, 2]}),
    ("GET", "/tokenizer_info", None),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with gateway_server(tmp_path_factory.mktemp("tokenize-auth")) as running:
        yield running


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_no_key_is_a_401(server: GatewayServer, method: str, path: str, body: dict | None) -> None:
    response = httpx.request(method, server.url + path, json=body)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_a_text_key_may_use_all_three(server: GatewayServer, method: str, path: str, body: dict | None) -> None:
    key = server.create_key(f"text {path}", ["generate:text"])["api_key"]
    response = httpx.request(method, server.url + path, json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text


def test_a_chat_only_key_reads_the_tokenizer_info_but_may_not_tokenize(server: GatewayServer) -> None:
    key = server.create_key("chat only", ["generate:chat"])["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(server.url + "/tokenizer_info", headers=headers).status_code == 200
    for method, path, body in ROUTES[:2]:
        response = httpx.request(method, server.url + path, json=body, headers=headers)
        assert response.status_code == 403
        assert "generate:text" in response.json()["error"]["message"]
