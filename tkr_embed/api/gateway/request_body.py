"""The request body as the gateway's checks need it: read whole, then replayed to the route (pure ASGI)."""

from __future__ import annotations

import json

from starlette.types import Message, Receive, Scope


def wants_stream(body: bytes) -> bool:
    """The `stream` field as the request models read it: any value but absent/null/false streams."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # BodyLimitMiddleware bounds the depth; this stays safe without it
        return False  # the route answers 400 before anything runs
    return isinstance(payload, dict) and payload.get("stream") not in (None, False)


async def buffer_body(receive: Receive) -> tuple[bytes, Receive] | None:
    """Read the whole body (BodyLimitMiddleware bounds it) and a `receive` that replays it; None if
    the client left."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    return body, replay(body, receive)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives `body` whole, then whatever `receive` gives (the disconnect)."""
    replayed = False

    async def next_message() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return next_message


def set_content_length(scope: Scope, length: int) -> None:
    headers = [(name, value) for name, value in scope["headers"] if name.lower() != b"content-length"]
    scope["headers"] = [*headers, (b"content-length", str(length).encode())]
