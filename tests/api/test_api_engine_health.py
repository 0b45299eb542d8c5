"""/health and the generation routes follow the engine's state at once, over a scripted engine whose death is a
flag: 503 engine_dead the moment it stops running, then the supervisor's decision (exit status 1, or a restart
after which the server is healthy again)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from fake_engine import FakeEngine
from fastapi import FastAPI
from live_server import live_server

from tkr_embed.api.server import create_app
from tkr_embed.config import Settings
from tkr_embed.harmony.tokenizer import get_tokenizer

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _server(tmp_path, on_failure: str) -> Iterator[tuple[str, FakeEngine, FastAPI]]:
    tok = get_tokenizer()
    engine = FakeEngine(decode=tok.decode)
    settings = Settings(storage={"data_dir": str(tmp_path)}, engine={"on_failure": on_failure, "max_restarts": 1})
    app = create_app(settings, engine, tokenizer=tok, model_path="/models/fake")
    with live_server(app) as url:
        yield url, engine, app


@pytest.fixture
def exiting(tmp_path) -> Iterator[tuple[str, FakeEngine, FastAPI]]:
    yield from _server(tmp_path, "exit")


@pytest.fixture
def restarting(tmp_path) -> Iterator[tuple[str, FakeEngine, FastAPI]]:
    yield from _server(tmp_path, "restart")


def _wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_dead_engine_is_503_engine_dead_at_once_and_the_server_asks_to_exit_1(exiting) -> None:
    url, engine, app = exiting
    assert httpx.get(url + "/health").json()["status"] == "healthy"
    engine.is_running, engine.dead_reason = False, "killed"
    health = httpx.get(url + "/health")
    assert health.status_code == 503
    assert health.json()["status"] == "engine_dead" and health.json()["model_loaded"] is True
    refused = httpx.post(url + "/v1/chat/completions", json=CHAT)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_dead"
    assert int(refused.headers["retry-after"]) > 0 and refused.headers["x-request-id"]
    _wait_for(lambda: app.state.lifecycle.exit_code == 1)
    assert engine.restarts == 0


def test_with_restart_the_server_is_healthy_again(restarting) -> None:
    url, engine, app = restarting
    engine.hold_restart = True  # else the supervisor may have restarted it before the first look
    engine.is_running, engine.dead_reason = False, "killed"
    assert httpx.get(url + "/health").status_code == 503
    engine.hold_restart = False
    _wait_for(lambda: engine.restarts == 1)
    _wait_for(lambda: httpx.get(url + "/health").status_code == 200)
    assert httpx.post(url + "/v1/chat/completions", json=CHAT).status_code == 200
    engine.is_running = False  # the one restart allowed is used: now the server asks to exit
    _wait_for(lambda: app.state.lifecycle.exit_code == 1)
    assert engine.restarts == 1
