"""Structured logs: one JSON object a line with the request id; no key material ever written."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from tkr_embed.logging import REDACTED, configure_logging, register_secret, request_context
from tkr_embed.security.hashing import generate_api_key

MASTER = "master-Secret-Value-0123456789"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_json_with_the_request_id(captured: io.StringIO) -> None:
    log = logging.getLogger("tkr_embed.test")
    log.info("outside any request")
    with request_context("req-123"):
        log.warning("served %d tokens", 42, extra={"route": "/v1/chat/completions", "status": 200})
    lines = _lines(captured)
    assert lines[0]["request_id"] is None and lines[0]["message"] == "outside any request"
    assert lines[1]["request_id"] == "req-123" and lines[1]["message"] == "served 42 tokens"
    assert (lines[1]["level"], lines[1]["logger"], lines[1]["route"], lines[1]["status"]) == (
        "WARNING",
        "tkr_embed.test",
        "/v1/chat/completions",
        200,
    )


async def test_request_ids_do_not_leak_between_tasks(captured: io.StringIO) -> None:
    log = logging.getLogger("tkr_embed.test")

    async def handle(request_id: str) -> None:
        with request_context(request_id):
            await asyncio.sleep(0.001)
            log.info("done %s", request_id)

    await asyncio.gather(*(handle(f"req-{i}") for i in range(20)))
    lines = [line for line in _lines(captured) if line["logger"] == "tkr_embed.test"]
    assert len(lines) == 20 and all(line["message"] == f"done {line['request_id']}" for line in lines)


def test_no_key_material_in_any_log_line(captured: io.StringIO) -> None:
    api_key = generate_api_key()
    register_secret(MASTER)
    log = logging.getLogger("tkr_embed.test")
    access = logging.getLogger("uvicorn.access")
    log.info("authenticated %s", api_key)
    log.info(f"raw key in the message {api_key}")
    log.info("headers", extra={"headers": {"Authorization": f"Bearer {api_key}", "X-API-Key": MASTER, "Accept": "*/*"}})
    log.info("header line Authorization: Bearer %s", MASTER)
    log.info("x-api-key: %s", api_key)
    log.info("master key %s used", MASTER)
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", f"/v1/models?api_key={MASTER}&limit=2", "1.1", 200)
    log.info("presented", extra={"api_key": api_key, "secret_key": "s" * 40})
    try:
        raise ValueError(f"bad key {api_key}")
    except ValueError:
        log.exception("request failed")

    output = captured.getvalue()
    body = api_key[len("tkr_") :]
    for material in (api_key, body, body[:16], body[-16:], MASTER, "s" * 40):
        assert material not in output
    lines = _lines(captured)
    assert len(lines) == 9
    assert lines[2]["headers"] == {"Authorization": REDACTED, "X-API-Key": REDACTED, "Accept": "*/*"}
    assert lines[3]["message"] == f"header line Authorization: Bearer {REDACTED}"
    assert lines[6]["message"] == f'127.0.0.1:5000 - "GET /v1/models?api_key={REDACTED}&limit=2 HTTP/1.1" 200'
    assert lines[7]["api_key"] == REDACTED
    assert "ValueError: bad key" in lines[8]["exc_info"]


def test_text_mode_is_redacted_too(captured: io.StringIO) -> None:
    stream = io.StringIO()
    configure_logging("INFO", json=False, stream=stream)
    api_key = generate_api_key()
    with request_context("req-text"):
        logging.getLogger("tkr_embed.test").info("key %s via Authorization: Bearer %s", api_key, api_key)
    line = stream.getvalue().strip()
    assert "[req-text]" in line and api_key not in line and api_key[4:] not in line
    assert line.endswith(f"key {REDACTED} via Authorization: Bearer {REDACTED}")
    assert captured.getvalue() == ""  # configure_logging replaced its earlier handler
