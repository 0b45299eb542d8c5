"""Server-Sent Events: typed models as `data:` lines, a final `data: [DONE]`, abort on disconnect."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator

import anyio
from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from tkr_embed.api.errors import error_body
from tkr_embed.engine.errors import EngineError
from tkr_embed.services.errors import ServiceError

logger = logging.getLogger("tkr_embed.api")
DONE = b"data: [DONE]\n\n"


# Characters that JSON leaves raw but that line readers built on str.splitlines() (httpx's
# aiter_lines among them) take for line ends: escaped, a streamed chunk always stays one line.
_LINE_BREAKING = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085"))


def event_json(event: BaseModel, *, exclude_none: bool = True) -> bytes:
    """The event as JSON bytes with no character any line reader splits on."""
    data = event.model_dump_json(exclude_none=exclude_none).encode()
    for raw, escaped in _LINE_BREAKING:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def sse_data(event: BaseModel, *, exclude_none: bool = True) -> bytes:
    return b"data: " + event_json(event, exclude_none=exclude_none) + b"\n\n"


async def sse_events(events: AsyncIterator[BaseModel], *, exclude_none: bool = True) -> AsyncIterator[bytes]:
    """Each event as one `data:` line; an error after the first byte becomes an error event."""
    try:
        async for event in events:
            yield sse_data(event, exclude_none=exclude_none)
    except (EngineError, ServiceError) as exc:
        yield sse_data(error_body(503 if isinstance(exc, EngineError) else 400, str(exc)))
    yield DONE


class EventStreamResponse(StreamingResponse):
    """A streaming response that stops (closing the event source, which aborts the engine request)
    as soon as the client disconnects, even while no token is being produced."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as task_group:

            async def stream_then_stop() -> None:
                try:
                    await self.stream_response(send)
                except OSError:
                    logger.debug("client went away while streaming")
                task_group.cancel_scope.cancel()

            task_group.start_soon(stream_then_stop)
            await self.listen_for_disconnect(receive)
            task_group.cancel_scope.cancel()
        if isinstance(self.body_iterator, AsyncGenerator):
            await self.body_iterator.aclose()
