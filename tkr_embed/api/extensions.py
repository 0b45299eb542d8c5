"""The seam where the gateway (auth, rate limits, usage, cache, admin, /metrics, /v1/responses) plugs in.

An extension is installed by `create_app` after the core routers and before the outermost
middleware (request id, body limit), so its middleware sees a request id and its errors carry one.
`open` runs before the engine starts (requests arrive while the model loads); `startup` runs once the engine is
up (the extension may keep the ServerState, e.g. for engine stats); `shutdown` runs before the engine stops.
"""

from __future__ import annotations

from typing import Protocol

from fastapi import FastAPI

from tkr_embed.api.state import ServerState
from tkr_embed.config import Settings


class AppExtension(Protocol):
    def install(self, app: FastAPI, settings: Settings) -> None:
        """Add middleware, routers (e.g. admin, /metrics, /v1/responses) and exception handlers."""

    async def open(self) -> None:
        """Open what requests need even while the model loads (database, redis)."""

    async def startup(self, state: ServerState) -> None:
        """Start what needs the running engine (its ServerState)."""

    async def shutdown(self) -> None:
        """Close what startup opened."""


def default_extensions(settings: Settings) -> list[AppExtension]:
    """The extensions `serve()` installs: the gateway (keys, rate limits, usage, cache, admin, /metrics)."""
    from tkr_embed.api.gateway import GatewayExtension

    return [GatewayExtension(settings)]
