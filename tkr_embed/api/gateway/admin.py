"""Admin routes: API keys (create / list / read / change / rotate / revoke), stats and the redacted configuration.

Mounted under /admin; the gateway middleware lets only keys with the `admin` permission through. Every change,
and every read of the configuration, is written to the audit log with the caller's key id and address.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from tkr_embed.api.errors import route_errors
from tkr_embed.api.gateway.admin_usage import add_usage_routes
from tkr_embed.api.gateway.config_view import redacted_settings
from tkr_embed.api.gateway.policy_schemas import RotateKeyRequest
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
    UpdateKeyRequest,
)
from tkr_embed.api.gateway.transport import TransportPolicy
from tkr_embed.api.state import ServerState
from tkr_embed.security.audit import AuditAction, diff, key_fields
from tkr_embed.security.gateway import Gateway
from tkr_embed.security.keys import KeyInfo, utcnow
from tkr_embed.security.usage import UsageTotals, usage_totals

ANONYMOUS_ACTOR = "anonymous"


def admin_router(gateway: Gateway, storage: str, transport: TransportPolicy | None = None) -> APIRouter:
    """The /admin routes over this gateway; `storage` names where rate-limit counters live."""
    router = APIRouter(prefix="/admin", tags=["admin"], responses=route_errors(400, 401, 403, 404))
    transport = transport or TransportPolicy()

    async def audit(request: Request, action: str, target: str | None, changes: dict | None = None) -> None:
        caller: KeyInfo | None = getattr(request.state, "api_key", None)
        await gateway.audit.record(
            actor=caller.id if caller is not None else ANONYMOUS_ACTOR,
            client=transport.client_address(request.scope),
            action=action,
            target=target,
            changes=changes,
        )

    @router.post("/api-keys", status_code=201, response_model=CreatedKeyResponse)
    async def create_key(body: CreateKeyRequest, request: Request) -> CreatedKeyResponse:
        created = await gateway.keys.create(
            body.name,
            permissions=body.permissions,
            expires_in_days=body.expires_in_days,
            limits=body.limits.to_limits() if body.limits is not None else None,
            budgets=body.budgets.to_budgets() if body.budgets is not None else None,
            reasoning=body.reasoning.to_policy() if body.reasoning is not None else None,
        )
        fields = {**key_fields(created.info), "expires_at": created.info.expires_at, "key_hint": created.info.hint}
        await audit(request, AuditAction.KEY_CREATED, created.info.id, diff({}, fields))
        return CreatedKeyResponse.of(created, utcnow())

    @router.get("/api-keys", response_model=KeyList)
    async def list_keys(include_revoked: bool = True) -> KeyList:
        now = utcnow()
        return KeyList(data=[KeyView.of(info, now) for info in await gateway.keys.list(include_revoked)])

    @router.get("/api-keys/{key_id}", response_model=KeyView, responses=route_errors(404))
    async def get_key(key_id: str) -> KeyView:
        return KeyView.of(await gateway.keys.get(key_id), utcnow())

    @router.patch("/api-keys/{key_id}", response_model=KeyView, responses=route_errors(404, 409))
    async def update_key(key_id: str, body: UpdateKeyRequest, request: Request) -> KeyView:
        before, after = await gateway.keys.update(key_id, body.to_update())
        changes = diff(key_fields(before), key_fields(after))
        if changes:
            await audit(request, AuditAction.KEY_UPDATED, key_id, changes)
        return KeyView.of(after, utcnow())

    @router.post("/api-keys/{key_id}/rotate", response_model=CreatedKeyResponse, responses=route_errors(404, 409))
    async def rotate_key(key_id: str, request: Request, body: RotateKeyRequest | None = None) -> CreatedKeyResponse:
        grace_period_s = (body or RotateKeyRequest()).grace_period_s
        before, created = await gateway.keys.rotate(key_id, grace_period_s)
        changes = {
            "key_hint": {"from": before.hint, "to": created.info.hint},
            "grace_period_s": {"from": None, "to": grace_period_s},
        }
        await audit(request, AuditAction.KEY_ROTATED, key_id, changes)
        return CreatedKeyResponse.of(created, utcnow())

    @router.delete("/api-keys/{key_id}", response_model=KeyView)
    async def revoke_key(key_id: str, request: Request) -> KeyView:
        before = await gateway.keys.get(key_id)
        revoked = await gateway.keys.revoke(key_id)
        if before.revoked_at is None:
            await audit(
                request, AuditAction.KEY_REVOKED, key_id, {"revoked_at": {"from": None, "to": revoked.revoked_at}}
            )
        return KeyView.of(revoked, utcnow())

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
        await audit(request, AuditAction.CONFIG_VIEWED, None)
        return ConfigResponse(config=redacted_settings(request.app.state.settings))

    add_usage_routes(router, gateway)
    return router
