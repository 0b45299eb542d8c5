"""Admin routes: API keys (create / list / revoke), stats and the redacted configuration.

Mounted under /admin; the gateway middleware lets only keys with the `admin` permission through.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from tkr_embed.api.errors import route_errors
from tkr_embed.api.gateway.config_view import redacted_settings
from tkr_embed.api.gateway.schemas import (
    CacheStatsView,
    ConfigResponse,
    CreatedKeyResponse,
    CreateKeyRequest,
    EngineStatsView,
    KeyList,
    KeyUsage,
    KeyView,
    RateLimitStatsView,
    StatsResponse,
)
from tkr_embed.api.state import ServerState
from tkr_embed.security.gateway import Gateway
from tkr_embed.security.keys import utcnow
from tkr_embed.security.usage import UsageTotals, usage_totals


def admin_router(gateway: Gateway, storage: str) -> APIRouter:
    """The /admin routes over this gateway; `storage` names where rate-limit counters live."""
    router = APIRouter(prefix="/admin", tags=["admin"], responses=route_errors(400, 401, 403, 404))

    @router.post("/api-keys", status_code=201, response_model=CreatedKeyResponse)
    async def create_key(body: CreateKeyRequest) -> CreatedKeyResponse:
        created = await gateway.keys.create(
            body.name,
            permissions=body.permissions,
            expires_in_days=body.expires_in_days,
            limits=body.limits.to_limits() if body.limits is not None else None,
        )
        return CreatedKeyResponse.of(created)

    @router.get("/api-keys", response_model=KeyList)
    async def list_keys(include_revoked: bool = True) -> KeyList:
        now = utcnow()
        return KeyList(data=[KeyView.of(info, now) for info in await gateway.keys.list(include_revoked)])

    @router.delete("/api-keys/{key_id}", response_model=KeyView)
    async def revoke_key(key_id: str) -> KeyView:
        return KeyView.of(await gateway.keys.revoke(key_id), utcnow())

    @router.get("/stats", response_model=StatsResponse)
    async def stats(request: Request) -> StatsResponse:
        state: ServerState | None = getattr(request.app.state, "server", None)
        await gateway.usage.flush()  # this process's buffered usage counts too
        totals = await usage_totals(gateway.db)
        limiter = gateway.limiter
        rejections = await limiter.rejections_by_key() if limiter is not None else {}
        names = {info.id: info.name for info in await gateway.keys.list()}
        names.setdefault("master", "master")
        usage = [
            KeyUsage(
                key_id=key_id,
                name=names.get(key_id),
                requests=t.requests,
                prompt_tokens=t.prompt_tokens,
                completion_tokens=t.completion_tokens,
                reasoning_tokens=t.reasoning_tokens,
                total_tokens=t.total_tokens,
                cache_hits=t.cache_hits,
                rate_limit_rejections=rejections.get(key_id, 0),
            )
            for key_id, t in sorted({**dict.fromkeys(rejections, UsageTotals()), **totals}.items())
        ]
        return StatsResponse(
            uptime_s=state.uptime_s if state is not None else 0.0,
            cache=CacheStatsView.of(gateway.cache.stats() if gateway.cache is not None else None),
            rate_limit=RateLimitStatsView(
                enabled=limiter is not None,
                storage=storage if limiter is not None else "off",
                rejections=sum(rejections.values()),
            ),
            usage=usage,
            engine=EngineStatsView.of(state.engine.stats()) if state is not None else None,
        )

    @router.get("/config", response_model=ConfigResponse)
    async def config(request: Request) -> ConfigResponse:
        return ConfigResponse(config=redacted_settings(request.app.state.settings))

    return router
