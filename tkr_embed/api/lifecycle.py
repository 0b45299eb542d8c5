"""Where the server is in its life, as /health reports it, and the gate that refuses new generation requests
while the server cannot serve them (starting, draining, engine dead or restarting) with 503 and Retry-After.

The phases: `starting` (the port is bound and the engine loads), `healthy`, `draining` (a first SIGTERM/SIGINT:
in-flight requests finish, new ones are refused), `engine_dead` (the engine is not running) and `restarting`
(the supervisor is starting a new engine, `engine.on_failure: restart`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import StrEnum

from starlette.types import ASGIApp, Receive, Scope, Send

from tkr_embed.api.errors import PHASE_REFUSALS, phase_refusal
from tkr_embed.api.gateway.paths import normalise_path
from tkr_embed.engine.client import EngineClient
from tkr_embed.security.permissions import ROUTE_PERMISSIONS

logger = logging.getLogger("tkr_embed.api")

# The exit status when the engine died and `engine.on_failure` is `exit` (or its restarts ran out).
EXIT_ENGINE_DEAD = 1
# The exit status when the server could not start: the port is taken, or the model failed to load (uvicorn's own
# status for a failed start-up).
EXIT_START_FAILED = 3
# Once the engine has ended every request (finished or aborted), how long their responses get to write
# their last events.
FLUSH_TIMEOUT_S = 5.0
_POLL_S = 0.02


class Phase(StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    DRAINING = "draining"
    ENGINE_DEAD = "engine_dead"
    RESTARTING = "restarting"


class Lifecycle:
    """The server's phase, its exit status and the generation requests in flight. `stop` (set by whoever runs
    uvicorn) makes the server stop serving."""

    def __init__(self) -> None:
        self.phase = Phase.STARTING
        self.engine: EngineClient | None = None
        self.owns_engine = False  # the engine was built for this server, which shuts it down
        self.engine_stopped = False
        self.exit_code = 0
        self.in_flight = 0
        self.stop: Callable[[], None] | None = None

    @property
    def status(self) -> Phase:
        """The phase, with a healthy server whose engine has stopped reported as `engine_dead` at once (before
        the supervisor's next look)."""
        if self.phase is Phase.HEALTHY and self.engine is not None and not self.engine.is_running:
            return Phase.ENGINE_DEAD
        return self.phase

    def serving(self, engine: EngineClient, *, owns_engine: bool) -> None:
        self.engine = engine
        self.owns_engine = owns_engine
        self.phase = Phase.HEALTHY

    async def drain(self, grace_s: float) -> None:
        """In-flight generation requests get up to `grace_s` to finish; then the engine (when this server owns
        it) aborts the rest, each of which ends with its terminal event, and their responses get FLUSH_TIMEOUT_S
        to write it. New generation requests are refused meanwhile (LifecycleGate)."""
        self.phase = Phase.DRAINING
        if self.engine is not None and self.owns_engine and not self.engine_stopped:
            await self.engine.shutdown(graceful=True, timeout_s=grace_s)
            self.engine_stopped = True
            await self._until_idle(FLUSH_TIMEOUT_S)
        else:
            await self._until_idle(grace_s)

    async def _until_idle(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
        if self.in_flight:
            logger.warning("%d generation request(s) still writing after %.1f s", self.in_flight, timeout_s)

    def request_exit(self, code: int) -> None:
        """Stop serving and exit with `code` (the first non-zero code wins)."""
        if self.exit_code == 0:
            self.exit_code = code
        if self.stop is not None:
            self.stop()
        else:
            logger.error("exit %d requested, but nothing runs this server that could stop it", code)


def is_generation_request(scope: Scope) -> bool:
    """A request that would start engine work: a POST to a generation route, or /stream."""
    path = normalise_path(scope["path"]).path
    return path in ROUTE_PERMISSIONS and (scope["method"] == "POST" or path == "/stream")


class LifecycleGate:
    """New generation requests get 503 with Retry-After (and `Connection: close`, so the client's next attempt
    opens a connection a balancer may send elsewhere) unless the server is healthy."""

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_generation_request(scope):
            status = self.lifecycle.status
            if status.value in PHASE_REFUSALS:
                await phase_refusal(status.value, {"Connection": "close"})(scope, receive, send)
                return
            self.lifecycle.in_flight += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.lifecycle.in_flight -= 1
            return
        await self.app(scope, receive, send)
