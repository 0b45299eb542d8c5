"""The gateway as an AppExtension: middleware, /admin and /metrics routers, error mapping, lifecycle."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from starlette.responses import Response

from tkr_embed.api.errors import error_response
from tkr_embed.api.gateway.admin import admin_router
from tkr_embed.api.gateway.metrics_route import metrics_router
from tkr_embed.api.gateway.middleware import GatewayMiddleware
from tkr_embed.api.gateway.transport import TransportPolicy
from tkr_embed.api.state import ServerState
from tkr_embed.config import Settings
from tkr_embed.security.errors import GatewayInputError, KeyNotFoundError, KeyRevokedError
from tkr_embed.security.gateway import Gateway

logger = logging.getLogger("tkr_embed.gateway")


async def _input_error(request: Request, exc: GatewayInputError) -> Response:
    return error_response(400, exc.message, exc.param)


async def _key_not_found(request: Request, exc: KeyNotFoundError) -> Response:
    return error_response(404, str(exc), "key_id", code="key_not_found")


async def _key_revoked(request: Request, exc: KeyRevokedError) -> Response:
    return error_response(409, str(exc), "key_id", code="key_revoked")


def _limiter_storage(settings: Settings) -> str:
    return "redis" if (settings.rate_limit.redis_url or settings.storage.redis_url) else "memory"


class GatewayExtension:
    """Keys, scopes, rate limits, usage, response cache, stored responses, admin API and /metrics for one app.

    `gateway` may be given (tests); by default it is built from the settings when installed.
    """

    def __init__(self, settings: Settings, gateway: Gateway | None = None) -> None:
        self.settings = settings
        self.gateway = gateway or Gateway.from_settings(settings)

    def install(self, app: FastAPI, settings: Settings) -> None:
        transport = TransportPolicy.of(settings.security.trusted_proxies)
        app.include_router(admin_router(self.gateway, _limiter_storage(settings), transport))
        app.include_router(metrics_router(self.gateway))
        app.add_exception_handler(GatewayInputError, _input_error)
        app.add_exception_handler(KeyNotFoundError, _key_not_found)
        app.add_exception_handler(KeyRevokedError, _key_revoked)
        app.add_middleware(
            GatewayMiddleware,
            gateway=self.gateway,
            auth_required=settings.auth_required,
            metrics_public=settings.security.metrics_public,
            require_https=settings.security.require_https,
            transport=transport,
            rate_limit_fail_open=settings.rate_limit.fail_open,
            default_reasoning_effort=settings.model.default_reasoning_effort,
        )
        app.state.gateway = self.gateway

    async def open(self) -> None:
        await self.gateway.start()  # keys are checked, and can be managed, while the model loads

    async def startup(self, state: ServerState) -> None:
        self.gateway.metrics.bind_model(state.model_id)
        state.response_store = self.gateway.responses
        settings = self.settings
        if not settings.auth_required:
            logger.warning(
                "AUTHENTICATION IS OFF (env=%s, config %s): every route, /admin included, is open to anyone "
                "who can reach this port. Set security.auth_enabled=true (GENERATION_AUTH_ENABLED) to require keys.",
                settings.env,
                settings.config_file,
            )
        else:
            logger.info(
                "auth on: master key %s; rate limits %s; response cache %s; /metrics %s",
                "set" if settings.security.api_key else "NOT set (admin routes unreachable)",
                f"on ({_limiter_storage(settings)})" if self.gateway.limiter is not None else "off",
                "on" if self.gateway.cache is not None else "off",
                "public" if settings.security.metrics_public else "admin-only",
            )
        if settings.security.require_https:
            logger.info(
                "HTTPS required: plain-HTTP requests get 403 (except /health); X-Forwarded-Proto believed from %s",
                ", ".join(settings.security.trusted_proxies) or "no peer",
            )

    async def shutdown(self) -> None:
        await self.gateway.close()
