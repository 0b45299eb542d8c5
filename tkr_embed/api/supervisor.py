"""The engine's supervisor, a task of the server's lifespan: when the engine stops running while the server is
healthy, /health turns 503 (`engine_dead`, then `restarting`), and the server either restarts the engine (at most
`engine.max_restarts` times over its life, each logged) or exits with EXIT_ENGINE_DEAD, as `engine.on_failure`
says. The engine fails the requests it held on its own, at once."""

from __future__ import annotations

import asyncio
import logging

from tkr_embed.api.lifecycle import EXIT_ENGINE_DEAD, Lifecycle, Phase
from tkr_embed.config import EngineSettings
from tkr_embed.engine.client import EngineClient

logger = logging.getLogger("tkr_embed.api")
POLL_INTERVAL_S = 0.1  # /health sees a dead engine at once; this only bounds how soon the server acts on it


async def supervise_engine(engine: EngineClient, lifecycle: Lifecycle, settings: EngineSettings) -> None:
    restarts = 0
    while True:
        await asyncio.sleep(POLL_INTERVAL_S)
        if lifecycle.phase is not Phase.HEALTHY:
            if lifecycle.phase is Phase.DRAINING:
                return  # the engine stops as part of the drain
            continue
        if engine.is_running:
            continue
        lifecycle.phase = Phase.ENGINE_DEAD
        reason = engine.dead_reason or "the engine stopped"
        if settings.on_failure != "restart" or restarts >= settings.max_restarts:
            logger.critical(
                "the engine is not running (%s); exiting with status %d (engine.on_failure=%s, %d of %d restarts used)",
                reason,
                EXIT_ENGINE_DEAD,
                settings.on_failure,
                restarts,
                settings.max_restarts,
            )
            lifecycle.request_exit(EXIT_ENGINE_DEAD)
            return
        restarts += 1
        lifecycle.phase = Phase.RESTARTING
        logger.error(
            "the engine is not running (%s); restarting it (restart %d of %d)", reason, restarts, settings.max_restarts
        )
        try:
            await engine.restart()
        except Exception:
            logger.exception("engine restart %d of %d failed", restarts, settings.max_restarts)
            lifecycle.phase = Phase.HEALTHY  # the next look finds it not running and decides again
            continue
        if lifecycle.phase is Phase.RESTARTING:
            lifecycle.phase = Phase.HEALTHY
            logger.warning("the engine is running again (restart %d of %d)", restarts, settings.max_restarts)
