"""Dependencies shared by the routers, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tkr_embed.api.state import ServerState
from tkr_embed.engine.errors import EngineDeadError


async def get_state(request: Request) -> ServerState:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a hand-off to another thread and back on
    # every request
    state: ServerState | None = getattr(request.app.state, "server", None)
    if state is None:
        raise EngineDeadError("the model is still loading")
    return state


State = Annotated[ServerState, Depends(get_state)]
