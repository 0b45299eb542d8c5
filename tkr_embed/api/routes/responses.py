"""POST /v1/responses (JSON or typed Server-Sent Events) and the stored responses: GET and DELETE
/v1/responses/{id}, GET /v1/responses/{id}/input_items."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response as HttpResponse

from tkr_embed.api.deps import State
from tkr_embed.api.disconnect import cancel_on_disconnect
from tkr_embed.api.errors import route_errors
from tkr_embed.api.sse import EventStreamResponse, event_json
from tkr_embed.engine.errors import EngineError
from tkr_embed.protocol.openai_response_items import ResponseDeleted, ResponseItemList
from tkr_embed.protocol.openai_responses import Response, ResponsesRequest
from tkr_embed.protocol.openai_responses_events import StreamEvent
from tkr_embed.services.errors import BadRequestError, ServiceError
from tkr_embed.services.responses import ResponsesService, error_event
from tkr_embed.services.responses_memory import DEFAULT_LIST_LIMIT

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
    service = ResponsesService(state.context, state.response_memory)
    if body.stream:
        return EventStreamResponse(response_events(await cancel_on_disconnect(request, service.create_stream(body))))
    return await cancel_on_disconnect(request, service.create(body))


@router.get("/responses/{response_id}", response_model=Response)
async def retrieve_response(response_id: str, state: State) -> Response:
    return await state.response_memory.retrieve(response_id)


@router.delete("/responses/{response_id}", response_model=ResponseDeleted)
async def delete_response(response_id: str, state: State) -> ResponseDeleted:
    return await state.response_memory.delete(response_id)


@router.get("/responses/{response_id}/input_items", response_model=ResponseItemList)
async def list_input_items(
    response_id: str,
    state: State,
    limit: Annotated[int, Query(ge=1, le=100)] = DEFAULT_LIST_LIMIT,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
    before: str | None = None,
    include: Annotated[list[str] | None, Query()] = None,
) -> ResponseItemList:
    if include:
        # The includable fields (logprobs, encrypted reasoning...) do not exist on stored input items.
        raise BadRequestError("include is not supported when listing input items", "include")
    return await state.response_memory.input_items(response_id, limit=limit, order=order, after=after, before=before)
