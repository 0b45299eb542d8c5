"""The original API: POST /generate, /chat, /stream."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tkr_embed.api.deps import State
from tkr_embed.api.disconnect import cancel_on_disconnect
from tkr_embed.api.errors import route_errors
from tkr_embed.api.sse import EventStreamResponse, sse_events
from tkr_embed.protocol.native import ChatRequest, GenerateRequest, GenerateResponse

router = APIRouter(tags=["native"], responses=route_errors(400, 413, 503))


@router.post("/generate", response_model=GenerateResponse)
async def generate(body: GenerateRequest, request: Request, state: State) -> GenerateResponse:
    return await cancel_on_disconnect(request, state.native.generate(body))


@router.post("/chat", response_model=GenerateResponse)
async def chat(body: ChatRequest, request: Request, state: State) -> GenerateResponse:
    return await cancel_on_disconnect(request, state.native.generate(body))


@router.post(
    "/stream",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "one `data:` event per delta, then `data: [DONE]`"}
    },
)
async def stream(body: GenerateRequest, request: Request, state: State) -> EventStreamResponse:
    # Every field of the event is always present (finish_reason: null included), as the original spec shows.
    events = await cancel_on_disconnect(request, state.native.stream(body))
    return EventStreamResponse(sse_events(events, exclude_none=False))
