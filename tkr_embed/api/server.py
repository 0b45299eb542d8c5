"""The app factory and the `python -m tkr_embed.api.server` / `tkr-embed serve` entry point."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from tkr_embed import __version__
from tkr_embed.api.engine_factory import start_engine
from tkr_embed.api.errors import install_error_handlers
from tkr_embed.api.extensions import AppExtension, default_extensions
from tkr_embed.api.lifecycle import Lifecycle, LifecycleGate, Phase
from tkr_embed.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from tkr_embed.api.routes import health, native, openai, responses
from tkr_embed.api.state import ServerState
from tkr_embed.api.supervisor import supervise_engine
from tkr_embed.config import ConfigError, Settings, load_settings
from tkr_embed.engine.client import EngineClient
from tkr_embed.engine.gc_pauses import freeze_loaded_objects
from tkr_embed.engine.tokenizer import Tokenizer
from tkr_embed.services.admission import configure_admission

logger = logging.getLogger("tkr_embed.api")
RATE_LIMIT_HEADERS = [
    f"x-ratelimit-{kind}-{unit}" for kind in ("limit", "remaining", "reset") for unit in ("requests", "tokens")
]


def create_app(
    settings: Settings,
    engine: EngineClient | None = None,
    *,
    tokenizer: Tokenizer | None = None,
    extensions: Sequence[AppExtension] = (),
    model_path: str | None = None,
) -> FastAPI:
    """The whole HTTP server. With `engine=None` the engine is built from the settings at startup
    (the demo checkpoint when no model is configured) and shut down with the app; a given engine
    is started but left to its owner to shut down."""

    lifecycle = Lifecycle()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from tkr_embed.harmony.tokenizer import get_tokenizer

        tok = tokenizer or get_tokenizer()
        owns_engine = engine is None
        if engine is None:
            loaded = await start_engine(settings, tok)
            running, path, is_demo = loaded.engine, loaded.model_path, loaded.is_demo
        else:
            running, path, is_demo = engine, model_path, False
        await running.start()
        state = ServerState(settings=settings, engine=running, tokenizer=tok, model_path=path, is_demo=is_demo)
        for extension in extensions:
            await extension.startup(state)
        app.state.server = state
        configure_admission(settings.server)
        freeze_loaded_objects()  # what start-up loaded stays out of every later full collection
        lifecycle.serving(running, owns_engine=owns_engine)
        supervisor = asyncio.create_task(
            supervise_engine(running, lifecycle, settings.engine), name="engine-supervisor"
        )
        logger.info(
            "serving %s (context %d tokens)%s",
            state.model_id,
            state.context.context_length,
            " — DEMO checkpoint, random weights" if is_demo else "",
        )
        try:
            yield
        finally:
            supervisor.cancel()
            if lifecycle.phase is Phase.HEALTHY:
                lifecycle.phase = Phase.DRAINING  # stopping without a drain (no signal): refuse new work
            app.state.server = None
            for extension in reversed(extensions):
                await extension.shutdown()
            if owns_engine and not lifecycle.engine_stopped:
                await running.shutdown(graceful=True, timeout_s=settings.server.graceful_shutdown_s)
                lifecycle.engine_stopped = True

    app = FastAPI(
        title="tkr-embed",
        version=__version__,
        description="gpt-oss text generation: the original API and an OpenAI-compatible API.",
        lifespan=lifespan,
        # A redirect to the slash-less path would name the host the client sent (any Host header): 404 instead.
        redirect_slashes=False,
    )
    app.state.server = None
    app.state.settings = settings
    app.state.lifecycle = lifecycle
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(native.router)
    app.include_router(openai.router)
    app.include_router(responses.router)
    for extension in extensions:
        extension.install(app, settings)
    if settings.server.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After", "X-Cache", *RATE_LIMIT_HEADERS],
        )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.server.max_body_bytes)
    app.add_middleware(LifecycleGate, lifecycle=lifecycle)  # before the body is read: refusing costs nothing
    app.add_middleware(RequestIdMiddleware)  # outermost: every response, 413 included, carries the id
    return app


# Libraries that log every operation at DEBUG (aiosqlite: each SQL call); ours log DEBUG in development.
QUIET_LIBRARY_LOGGERS = ("aiosqlite", "httpx", "httpcore", "asyncio", "multipart", "python_multipart", "hpack")


def configure_logging(settings: Settings) -> None:
    """Every logger (uvicorn's access log included) through one redacting handler on stderr; the
    chattiest libraries stay at INFO or above whatever our level is."""
    from tkr_embed.logging import configure_logging as configure_redacted_logging

    configure_redacted_logging(settings.log_level, json=settings.server.log_format == "json", stream=sys.stderr)
    library_level = max(logging.INFO, logging.getLevelName(settings.log_level.upper()))
    for name in QUIET_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)


def serve(
    host: str | None = None,
    port: int | None = None,
    config_path: str | None = None,
    *,
    engine: EngineClient | None = None,
) -> int:
    """Run the server with uvicorn until a signal (a drain, then 0) or the engine's death (EXIT_ENGINE_DEAD);
    returns the process exit code.

    `engine` replaces the one the settings describe (tests run the real server over a scripted engine)."""
    import uvicorn

    from tkr_embed.api.connections import connection_options
    from tkr_embed.api.graceful import UVICORN_SHUTDOWN_TIMEOUT_S, DrainingServer, stop_children
    from tkr_embed.security.secret_strength import refuse_weak_secrets

    try:
        settings = load_settings(Path(config_path) if config_path else None)
        refuse_weak_secrets(settings)
    except ConfigError as exc:
        print(f"tkr-embed: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if settings.env == "development" and not settings.auth_required:
        logger.warning("development mode: authentication is OFF (config %s)", settings.config_file)
    app = create_app(settings, engine, extensions=default_extensions(settings))
    config = uvicorn.Config(
        app,
        host=host or settings.server.host,
        port=port or settings.server.port,
        log_level=settings.log_level,
        log_config=None,  # our handler (JSON, redaction) receives uvicorn's lines, access log included
        # uvicorn believes X-Forwarded-* only from the same peers as the gateway's HTTPS check does
        # (its default, 127.0.0.1, would let a local caller claim HTTPS with `trusted_proxies: []`).
        proxy_headers=bool(settings.security.trusted_proxies),
        forwarded_allow_ips=",".join(settings.security.trusted_proxies) or None,
        # the drain (DrainingServer) has already given in-flight requests server.graceful_shutdown_s
        timeout_graceful_shutdown=UVICORN_SHUTDOWN_TIMEOUT_S,
        **connection_options(settings.server),
    )
    lifecycle: Lifecycle = app.state.lifecycle
    server = DrainingServer(config, lifecycle, settings.server.graceful_shutdown_s)
    try:
        server.run()
    finally:
        stop_children()
    if lifecycle.exit_code:
        logger.error("exiting with status %d", lifecycle.exit_code)
    return lifecycle.exit_code


if __name__ == "__main__":
    sys.exit(serve())
