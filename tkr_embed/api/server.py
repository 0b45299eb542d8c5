"""The app factory and the `python -m tkr_embed.api.server` / `tkr-embed serve` entry point."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from tkr_embed import __version__
from tkr_embed.api.console import install_console
from tkr_embed.api.docs_pages import install_docs
from tkr_embed.api.errors import install_error_handlers
from tkr_embed.api.extensions import AppExtension, default_extensions
from tkr_embed.api.lifecycle import EXIT_START_FAILED, Lifecycle, LifecycleGate
from tkr_embed.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from tkr_embed.api.routes import health, native, openai, responses, tokenize
from tkr_embed.api.startup import ServerLifespan
from tkr_embed.config import ConfigError, Settings, load_settings
from tkr_embed.engine.client import EngineClient
from tkr_embed.engine.tokenizer import Tokenizer

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
    start_in_background: bool = False,
) -> FastAPI:
    """The whole HTTP server. With `engine=None` the engine is built from the settings at startup
    (the demo checkpoint when no model is configured) and shut down with the app; a given engine
    is started but left to its owner to shut down. `start_in_background`: the app serves (/health says
    `starting`) while the engine starts, as `serve()` runs it (api/startup.py)."""

    lifecycle = Lifecycle()
    lifespan = ServerLifespan(
        settings,
        lifecycle,
        engine=engine,
        tokenizer=tokenizer,
        extensions=extensions,
        model_path=model_path,
        in_background=start_in_background,
    )
    app = FastAPI(
        title="tkr-embed",
        version=__version__,
        description="gpt-oss text generation: the original API and an OpenAI-compatible API.",
        lifespan=lifespan,
        # A redirect to the slash-less path would name the host the client sent (any Host header): 404 instead.
        redirect_slashes=False,
        # Served from the package (api/docs_pages.py), not FastAPI's CDN pages: they work without internet.
        docs_url=None,
        redoc_url=None,
    )
    app.state.server = None
    app.state.settings = settings
    app.state.lifecycle = lifecycle
    install_error_handlers(app)
    install_docs(app)
    install_console(app)
    app.include_router(health.router)
    app.include_router(native.router)
    app.include_router(openai.router)
    app.include_router(responses.router)
    app.include_router(tokenize.router)
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


def listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound before anything is loaded, so a taken port is reported at once.
    Raises OSError."""
    family, kind, protocol, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    listener = socket.socket(family, kind, protocol)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT only is free
        listener.bind(address)
    except OSError:
        listener.close()
        raise
    return listener


def serve(
    host: str | None = None,
    port: int | None = None,
    config_path: str | None = None,
    *,
    engine: EngineClient | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> int:
    """Run the server with uvicorn until a signal (a drain, then 0), the engine's death (EXIT_ENGINE_DEAD) or a
    failed start (EXIT_START_FAILED: the port taken, the model not loaded); returns the process exit code.

    The port is bound first; the engine then loads behind it while /health answers `starting`. `overrides` are
    the command line's settings (`tkr-embed serve`'s flags), above the environment; `host` and `port` above them.
    `engine` replaces the one the settings describe (tests run the real server over a scripted engine)."""
    import uvicorn

    from tkr_embed.api.connections import connection_options
    from tkr_embed.api.graceful import UVICORN_SHUTDOWN_TIMEOUT_S, DrainingServer, stop_children
    from tkr_embed.security.secret_strength import refuse_weak_secrets

    overrides = {key: dict(value) if isinstance(value, Mapping) else value for key, value in (overrides or {}).items()}
    for name, value in (("host", host), ("port", port)):
        if value is not None:
            overrides.setdefault("server", {})[name] = value
    try:
        settings = load_settings(Path(config_path) if config_path else None, overrides=overrides)
        refuse_weak_secrets(settings)
    except ConfigError as exc:
        print(f"tkr-embed: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    host, port = settings.server.host, settings.server.port
    try:
        listener = listen(host, port)
    except OSError as exc:
        logger.critical(
            "cannot listen on %s:%d: %s; is another server running there? Choose another port with --port or "
            "GENERATION_PORT. Exiting with status %d before loading the model",
            host,
            port,
            exc.strerror or exc,
            EXIT_START_FAILED,
        )
        return EXIT_START_FAILED
    if settings.env == "development" and not settings.auth_required:
        logger.warning("development mode: authentication is OFF (config %s)", settings.config_file)
    app = create_app(settings, engine, extensions=default_extensions(settings), start_in_background=True)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level,
        log_config=None,  # our handler (JSON, redaction) receives uvicorn's own lines
        # Each request is logged once, by RequestIdMiddleware (with its request id and key), not also by uvicorn.
        access_log=False,
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
    logger.info("listening on http://%s:%d; /health answers 503 starting until the model is loaded", host, port)
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
        stop_children()
    if lifecycle.exit_code:
        logger.error("exiting with status %d", lifecycle.exit_code)
    return lifecycle.exit_code


if __name__ == "__main__":
    sys.exit(serve())
