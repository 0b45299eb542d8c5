"""GET /metrics: the Prometheus exposition of this process (admin-only unless security.metrics_public)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from tkr_embed.api.state import ServerState
from tkr_embed.security.gateway import Gateway


def metrics_router(gateway: Gateway) -> APIRouter:
    router = APIRouter(tags=["server"])

    @router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics(request: Request) -> Response:
        state: ServerState | None = getattr(request.app.state, "server", None)
        if state is not None:
            gateway.metrics.update_engine(state.engine.stats())
        body, content_type = gateway.metrics.render()
        return Response(body, media_type=content_type)

    return router
