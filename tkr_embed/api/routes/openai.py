"""The OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from tkr_embed.api.deps import State
from tkr_embed.api.disconnect import cancel_on_disconnect
from tkr_embed.api.errors import route_errors
from tkr_embed.api.sse import EventStreamResponse, sse_events
from tkr_embed.api.state import ServerState
from tkr_embed.protocol.openai_chat import ChatCompletionRequest, ChatCompletionResponse
from tkr_embed.protocol.openai_common import ModelCard, ModelList
from tkr_embed.protocol.openai_completions import CompletionRequest, CompletionResponse

router = APIRouter(prefix="/v1", tags=["openai"], responses=route_errors(400, 404, 413, 503))


def _card(state: ServerState, name: str) -> ModelCard:
    return ModelCard(id=name, created=int(state.started_at_unix), max_model_len=state.context.context_length)


@router.get("/models", response_model=ModelList)
async def list_models(state: State) -> ModelList:
    """Every name the model is served under (as vLLM lists them), the one answers carry first."""
    return ModelList(data=[_card(state, name) for name in state.context.served_names])


@router.get("/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, state: State) -> ModelCard:
    state.context.check_model(model_id)
    return _card(state, model_id)


@router.post("/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, state: State
) -> Response | ChatCompletionResponse:
    if body.stream:
        return EventStreamResponse(sse_events(await cancel_on_disconnect(request, state.chat.create_stream(body))))
    return await cancel_on_disconnect(request, state.chat.create(body))


@router.post("/completions", response_model=CompletionResponse)
async def completions(body: CompletionRequest, request: Request, state: State) -> Response | CompletionResponse:
    if body.stream:
        return EventStreamResponse(
            sse_events(await cancel_on_disconnect(request, state.completions.create_stream(body)))
        )
    return await cancel_on_disconnect(request, state.completions.create(body))
