"""Pure ASGI middleware (streaming-safe): X-Request-ID on every response (an unexpected error's 500 included) and
one log line per request, and the request body's limits (size, JSON nesting depth)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tkr_embed.api.errors import error_body, error_response, is_json_content_type
from tkr_embed.api.json_depth import MAX_JSON_DEPTH, nests_deeper_than
from tkr_embed.logging import request_context

logger = logging.getLogger("tkr_embed.api")
access_logger = logging.getLogger("tkr_embed.access")

REQUEST_ID_HEADER = "x-request-id"
KEY_ID_STATE = "key_id"  # scope["state"] key where the gateway notes the caller's key id, for the log line
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestIdMiddleware:
    """Echo the client's X-Request-ID (when well formed) or make one; stored in scope["state"], and on every log
    line written while the request runs. When it ends, the request's one log line (`tkr_embed.access`): method,
    path (never the query, which may hold a key), status, duration and the caller's key id; a request refused
    before any route (413, 503 while starting) included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = _header(scope, REQUEST_ID_HEADER.encode())
        request_id = sent if sent and _VALID_REQUEST_ID.match(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = False
        status: int | None = None
        began = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER.encode()]
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with request_context(request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                # An error no handler took reaches Starlette's outermost layer, which answers 500 without passing
                # through here: answered here instead, the 500 carries the request id like every other response.
                body = error_body(500, "internal server error")
                logger.exception("unexpected error %s on %s %s", body.error_id, scope["method"], scope["path"])
                if started:
                    raise  # the client sees its response cut short; nothing else can be said now
                await JSONResponse(body.model_dump(), status_code=500)(scope, receive, send_with_id)
            finally:
                _log_request(scope, status, time.perf_counter() - began)


def _log_request(scope: Scope, status: int | None, duration_s: float) -> None:
    route = scope.get("route")
    duration_ms = round(duration_s * 1000, 3)
    access_logger.info(
        "%s %s %s %.1f ms",
        scope["method"],
        scope["path"],
        status if status is not None else "(no response: the client left)",
        duration_ms,
        extra={
            "method": scope["method"],
            "path": scope["path"],
            "route": getattr(route, "path", None),
            "status": status,
            "key_id": scope["state"].get(KEY_ID_STATE),
            "duration_ms": duration_ms,
        },
    )


# An oversized body is read and thrown away before the 413, up to this much and this long: a connection closed with
# the body unread is reset, and a client still writing (the OpenAI SDK's async client) sees the reset instead of the
# answer. Past either bound the connection is closed as it stands.
OVERSIZED_DRAIN_BYTES = 64 * 1024 * 1024
OVERSIZED_DRAIN_S = 10.0


async def _drain(receive: Receive) -> None:
    drained = 0
    try:
        async with asyncio.timeout(OVERSIZED_DRAIN_S):
            while drained <= OVERSIZED_DRAIN_BYTES:
                message = await receive()
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    return
                drained += len(message.get("body", b""))
    except TimeoutError:
        return


class BodyLimitMiddleware:
    """Answer 413 for a body over `max_body_bytes` (declared or streamed), and 400 for a JSON body nested more than
    MAX_JSON_DEPTH levels deep, before anything parses it."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            if int(declared) <= OVERSIZED_DRAIN_BYTES:
                await _drain(receive)
            await self._reject(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                if message.get("more_body", False):
                    await _drain(receive)
                await self._reject(send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = _header(scope, b"content-type")
        if (content_type is None or is_json_content_type(content_type)) and nests_deeper_than(body):
            await error_response(
                400,
                f"the request body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep",
                code="json_too_deep",
            )(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the client to disconnect

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        body = error_body(
            413, f"the request body is larger than the limit of {self.max_body_bytes} bytes", code="request_too_large"
        )
        payload = body.model_dump_json().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
