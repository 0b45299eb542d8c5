"""The app's lifespan: the extensions' stores opened, the engine started, and all of it stopped in reverse.

Behind `tkr-embed serve` the engine starts in a task of its own (`in_background`): the port is already bound,
/health answers 503 `starting` and generation requests get 503 `starting` with Retry-After while the model loads,
and a load that fails stops the server with EXIT_START_FAILED. An app driven in-process (a TestClient, a test's
uvicorn thread) waits for the engine inside the lifespan instead, and a failed load fails its start-up.
The extensions open their stores first either way, so keys are checked (and can be managed) while the model loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tkr_embed.api.engine_factory import start_engine
from tkr_embed.api.extensions import AppExtension
from tkr_embed.api.lifecycle import EXIT_START_FAILED, Lifecycle, Phase
from tkr_embed.api.state import ServerState
from tkr_embed.api.stats_log import log_engine_stats
from tkr_embed.api.supervisor import supervise_engine
from tkr_embed.config import Settings
from tkr_embed.engine.client import EngineClient
from tkr_embed.engine.gc_pauses import freeze_loaded_objects
from tkr_embed.engine.tokenizer import Tokenizer
from tkr_embed.services.admission import configure_admission

logger = logging.getLogger("tkr_embed.api")


class ServerLifespan:
    """The lifespan of one app. With `engine=None` the engine is built from the settings (the demo checkpoint
    when no model is configured) and shut down with the app; a given engine is started but left to its owner."""

    def __init__(
        self,
        settings: Settings,
        lifecycle: Lifecycle,
        *,
        engine: EngineClient | None,
        tokenizer: Tokenizer | None,
        extensions: Sequence[AppExtension],
        model_path: str | None,
        in_background: bool,
    ) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.given_engine = engine
        self.tokenizer = tokenizer
        self.extensions = list(extensions)
        self.model_path = model_path
        self.in_background = in_background
        self.engine: EngineClient | None = None  # once built
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def owns_engine(self) -> bool:
        return self.given_engine is None

    @asynccontextmanager
    async def __call__(self, app: FastAPI) -> AsyncIterator[None]:
        for extension in self.extensions:
            await extension.open()
        starting: asyncio.Task[None] | None = None
        if self.in_background:
            starting = asyncio.create_task(self._start_or_exit(app), name="engine-start")
        else:
            await self._start(app)
        try:
            yield
        finally:
            await self._stop(app, starting)

    async def _start(self, app: FastAPI) -> None:
        from tkr_embed.harmony.tokenizer import get_tokenizer

        settings = self.settings
        tokenizer = self.tokenizer or await asyncio.to_thread(get_tokenizer)
        if self.given_engine is None:
            loaded = await start_engine(settings, tokenizer)
            self.engine, path, is_demo = loaded.engine, loaded.model_path, loaded.is_demo
        else:
            self.engine, path, is_demo = self.given_engine, self.model_path, False
        await self.engine.start()
        state = ServerState(
            settings=settings, engine=self.engine, tokenizer=tokenizer, model_path=path, is_demo=is_demo
        )
        for extension in self.extensions:
            await extension.startup(state)
        app.state.server = state
        configure_admission(settings.server)
        freeze_loaded_objects()  # what start-up loaded stays out of every later full collection
        self.lifecycle.serving(self.engine, owns_engine=self.owns_engine)
        self.tasks.append(
            asyncio.create_task(
                supervise_engine(self.engine, self.lifecycle, settings.engine), name="engine-supervisor"
            )
        )
        if settings.server.log_stats_interval_s > 0:
            self.tasks.append(
                asyncio.create_task(
                    log_engine_stats(self.engine, settings.server.log_stats_interval_s), name="engine-stats-log"
                )
            )
        logger.info(
            "serving %s (context %d tokens)%s",
            ", ".join(state.context.served_names),
            state.context.context_length,
            " — the tiny DEMO model (see /info for what it can do)" if is_demo else "",
        )

    async def _start_or_exit(self, app: FastAPI) -> None:
        try:
            await self._start(app)
        except Exception as exc:
            logger.critical(
                "the model could not be loaded (%s: %s); exiting with status %d",
                type(exc).__name__,
                exc,
                EXIT_START_FAILED,
                exc_info=True,
            )
            self.lifecycle.phase = Phase.ENGINE_DEAD
            self.lifecycle.request_exit(EXIT_START_FAILED)

    async def _stop(self, app: FastAPI, starting: asyncio.Task[None] | None) -> None:
        if starting is not None and not starting.done():
            logger.warning("stopping while the model loads")
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        for task in self.tasks:
            task.cancel()
        lifecycle = self.lifecycle
        if lifecycle.phase is Phase.HEALTHY:
            lifecycle.phase = Phase.DRAINING  # stopping without a drain (no signal): refuse new work
        app.state.server = None
        for extension in reversed(self.extensions):
            await extension.shutdown()
        if self.owns_engine and self.engine is not None and not lifecycle.engine_stopped:
            await self.engine.shutdown(graceful=True, timeout_s=self.settings.server.graceful_shutdown_s)
            lifecycle.engine_stopped = True
