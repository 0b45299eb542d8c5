"""POST /v1/responses (stateless), JSON or typed Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from starlette.responses import Response as HttpResponse

from tkr_embed.api.deps import State
from tkr_embed.api.disconnect import cancel_on_disconnect
from tkr_embed.api.errors import route_errors
from tkr_embed.api.sse import EventStreamResponse, event_json
from tkr_embed.engine.errors import EngineError
from tkr_embed.protocol.openai_responses import Response, ResponsesRequest
from tkr_embed.protocol.openai_responses_events import StreamEvent
from tkr_embed.services.errors import ServiceError
from tkr_embed.services.responses import ResponsesService, error_event

router = APIRouter(prefix="/v1", tags=["openai"], responses=route_errors(400, 404, 413, 503))


def sse_event(event: StreamEvent) -> bytes:
    # Null fields are written: the Open Responses schema requires keys such as `completed_at` even when null.
    return f"event: {event.type}\ndata: ".encode() + event_json(event, exclude_none=False) + b"\n\n"


async def response_events(events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    """Each event as `event:` + `data:` lines (no `[DONE]`: `response.completed` ends the stream);
    an error after the first byte becomes an `error` event."""
    sequence_number = 0
    try:
        async for event in events:
            sequence_number = event.sequence_number + 1
            yield sse_event(event)
    except (EngineError, ServiceError) as exc:
        yield sse_event(error_event(exc, sequence_number))


@router.post(
    "/responses",
    response_model=Response,
    responses={200: {"content": {"text/event-stream": {}}, "description": "with `stream: true`, typed events"}},
)
async def create_response(body: ResponsesRequest, request: Request, state: State) -> HttpResponse | Response:
    service = ResponsesService(state.context)
    if body.stream:
        return EventStreamResponse(response_events(await cancel_on_disconnect(request, service.create_stream(body))))
    return await cancel_on_disconnect(request, service.create(body))
