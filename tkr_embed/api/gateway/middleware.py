"""The gateway in front of every route: who calls (key), may they (permissions), how often (rate
limits, budgets, reasoning policy), and what it cost (usage, metrics; the caller's key id for the request's log
line, api/middleware.py).

Pure ASGI, so streaming bodies pass through untouched. Order of the checks: public paths pass;
then authentication (401), permissions on the normalised path (403), token budgets (429 budget_exceeded), the
key's reasoning policy (the effort stepped down in the body, or 403), rate limits (429). The
decision never reads the Host header or the raw spelling of the path. Usage is recorded and metrics
observed after the response, from the request's `RequestAccount` (filled by the services); the usage
write itself happens later, in batches, off the request path.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.datastructures import Headers, QueryParams
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tkr_embed.api.errors import error_body, error_response
from tkr_embed.api.gateway.accounting import observe_account
from tkr_embed.api.gateway.paths import HEALTH_PATH, METRICS_PATH, NormalisedPath, normalise_path
from tkr_embed.api.gateway.policy_schemas import BudgetExceededView
from tkr_embed.api.gateway.reasoning_effort import EFFORT_FIELDS, apply_policy, param_name
from tkr_embed.api.gateway.request_body import buffer_body, replay, set_content_length, wants_stream
from tkr_embed.api.gateway.transport import TransportPolicy
from tkr_embed.api.middleware import KEY_ID_STATE
from tkr_embed.logging import request_context
from tkr_embed.security.budgets import BudgetExceeded
from tkr_embed.security.credentials import extract_api_key
from tkr_embed.security.gateway import Gateway
from tkr_embed.security.keys import KeyInfo
from tkr_embed.security.permissions import (
    ALL_PERMISSIONS,
    ROUTE_PERMISSIONS,
    STREAM_ONLY_ROUTES,
    Permission,
    required_permissions,
)
from tkr_embed.security.policy import EffortDecision, EffortNotAllowed
from tkr_embed.security.ratelimit import RateDecision
from tkr_embed.services.accounting import RequestAccount, RequestCost, account_scope
from tkr_embed.services.errors import RateLimitedError, ServiceError

logger = logging.getLogger("tkr_embed.gateway")

ANONYMOUS = KeyInfo(id="anonymous", name="anonymous (auth off)", permissions=ALL_PERMISSIONS)
UNMATCHED_ROUTE = "unmatched"
SERVER_TIMING_HEADER = b"server-timing"
STORE_ERROR_LOG_INTERVAL_S = 10.0  # one log line per interval while the rate-limit store is down
STORE_DOWN_RETRY_AFTER_S = 5
# Routes whose requests run the engine, and so spend a key's token budgets.
BUDGETED_ROUTES = frozenset({*EFFORT_FIELDS, "/v1/completions"})


class _StoreDownError(ServiceError):
    status = 503
    error_type = "server_error"
    headers = {"Retry-After": "5"}


class RateLimitStoreDown(Exception):
    """The rate-limit counter store failed and `rate_limit.fail_open` is off: the request is refused."""


@dataclass
class _Exchange:
    """What the middleware learns about one request while it runs."""

    status: int = 500
    caller: KeyInfo | None = None


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED_ROUTE


def _route_path(scope: Scope) -> str:
    """The path the router matches: the request path without the mount prefix (root_path)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :]
    return path


def _budget_response(spent: BudgetExceeded) -> JSONResponse:
    """429 budget_exceeded in the OpenAI error shape, with the spent budget and when it resets."""
    retry_after = max(1, int((spent.resets_at - datetime.now(UTC)).total_seconds()) + 1)
    body = error_body(429, spent.message, code="budget_exceeded").model_dump()
    body["budget"] = BudgetExceededView.of(spent).model_dump(mode="json")
    resets = spent.resets_at.isoformat().replace("+00:00", "Z")
    return JSONResponse(body, status_code=429, headers={"Retry-After": str(retry_after), "X-Budget-Reset": resets})


def _server_timing(started: float) -> tuple[bytes, bytes]:
    """`Server-Timing: total;dur=<ms>`: the server's time from the gateway to the response headers."""
    return SERVER_TIMING_HEADER, f"total;dur={(time.perf_counter() - started) * 1000:.3f}".encode()


class GatewayMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        gateway: Gateway,
        auth_required: bool,
        metrics_public: bool,
        require_https: bool = False,
        transport: TransportPolicy | None = None,
        rate_limit_fail_open: bool = True,
        default_reasoning_effort: str = "medium",
    ) -> None:
        self.app = app
        self.gateway = gateway
        self.auth_required = auth_required
        self.metrics_public = metrics_public
        self.require_https = require_https
        self.transport = transport or TransportPolicy()
        self.rate_limit_fail_open = rate_limit_fail_open
        self.default_reasoning_effort = default_reasoning_effort
        self._store_error_logged_at: float | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and (
            (self.require_https and not self.transport.is_secure(scope)) or await self._authenticate(scope) is None
        ):
            await send({"type": "websocket.close", "code": 1008})  # before accept: the client sees 403
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        request_id = state.get("request_id") or uuid.uuid4().hex
        exchange = _Exchange()
        timer = time.perf_counter()

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), _server_timing(timer)]}
            await send(message)

        with request_context(request_id):
            try:
                await self._handle(scope, receive, tracking_send, exchange)
            finally:
                self._count(scope, exchange)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, exchange: _Exchange) -> None:
        path = normalise_path(_route_path(scope))
        if path.has_dot_segments:
            await error_response(400, "the path must not contain '.' or '..' segments", code="invalid_path")(
                scope, receive, send
            )
            return
        if self.require_https and path.path != HEALTH_PATH and not self.transport.is_secure(scope):
            await error_response(
                403,
                "this server accepts only HTTPS requests (security.require_https); use an https:// URL",
                code="https_required",
            )(scope, receive, send)
            return
        if path.is_public or (path.path == METRICS_PATH and self.metrics_public):
            await self.app(scope, receive, send)
            return

        caller = await self._authenticate(scope)
        if caller is None:
            presented = extract_api_key(Headers(scope=scope), QueryParams(scope.get("query_string", b""))) is not None
            message = (
                "invalid API key (unknown, expired or revoked)"
                if presented
                else "an API key is required: send it as 'Authorization: Bearer <key>', 'X-API-Key' or '?api_key='"
            )
            code = "invalid_api_key" if presented else "missing_api_key"
            await error_response(401, message, code=code, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        exchange.caller = caller
        scope["state"][KEY_ID_STATE] = caller.id

        stream, receive = await self._stream_flag(scope, receive, path, caller)
        if stream is None:
            return  # the client left while sending its body
        needed = required_permissions(path.path, stream)
        if not caller.allows_all(needed):
            missing = ", ".join(sorted(p.value for p in needed if not caller.allows(p)))
            await error_response(
                403,
                f"this API key lacks the permission {missing} needed for {scope['method']} {path.path}",
                code="insufficient_permissions",
            )(scope, receive, send)
            return

        generates = scope["method"] == "POST" and path.path in BUDGETED_ROUTES
        if generates:
            spent = await self._spent_budget(caller)
            if spent is not None:
                await _budget_response(spent)(scope, receive, send)
                return
        effort: EffortDecision | None = None
        if generates and caller.reasoning.allowed_efforts is not None:
            buffered = await buffer_body(receive)
            if buffered is None:
                return
            try:
                outcome = apply_policy(path.path, buffered[0], caller.reasoning, self.default_reasoning_effort)
            except EffortNotAllowed as refusal:
                await error_response(403, str(refusal), param_name(path.path), code="reasoning_effort_not_allowed")(
                    scope, receive, send
                )
                return
            effort = outcome.decision
            receive = replay(outcome.body, receive)
            if outcome.body is not buffered[0]:
                set_content_length(scope, len(outcome.body))

        try:
            decision = await self._rate_limit(caller, needed)
        except RateLimitStoreDown:
            await error_response(
                503,
                "rate limits cannot be checked right now; retry after the time in Retry-After",
                code="rate_limit_unavailable",
                headers={"Retry-After": str(STORE_DOWN_RETRY_AFTER_S)},
            )(scope, receive, send)
            return
        if decision is not None and not decision.allowed:
            self.gateway.metrics.rate_limit_rejections.inc()
            await error_response(
                429,
                f"rate limit exceeded ({decision.limited_by}); retry after the time in Retry-After",
                code="rate_limit_exceeded",
                headers=decision.headers(),
            )(scope, receive, send)
            return

        scope["state"]["api_key"] = caller
        account = RequestAccount(
            scope=caller.id, cache=self.gateway.cache, max_reasoning_tokens=caller.reasoning.max_reasoning_tokens
        )
        if decision is not None:
            account.charge = self._charger(caller)
        extra_headers = decision.headers() if decision is not None else {}
        if effort is not None and effort.stepped_down:
            extra_headers["X-Reasoning-Effort-Applied"] = effort.applied
            extra_headers["X-Reasoning-Effort-Requested"] = effort.requested

        observed = False

        async def observe() -> None:
            nonlocal observed
            if not observed:
                observed = True
                await observe_account(self.gateway, caller, account, charge_tokens=decision is not None)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                # Counted before the client sees the end: its next request finds this one in the budgets.
                await observe()
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(name.encode(), value.encode()) for name, value in extra_headers.items()]
                if account.cache_status is not None:
                    headers.append((b"x-cache", account.cache_status.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            with account_scope(account):
                await self.app(scope, receive, send_with_headers)
        finally:
            await observe()

    async def _authenticate(self, scope: Scope) -> KeyInfo | None:
        raw_key = extract_api_key(Headers(scope=scope), QueryParams(scope.get("query_string", b"")))
        caller = await self.gateway.authenticator.authenticate(raw_key) if raw_key else None
        if caller is None and not self.auth_required:
            return ANONYMOUS
        return caller

    async def _stream_flag(
        self, scope: Scope, receive: Receive, path: NormalisedPath, caller: KeyInfo
    ) -> tuple[bool | None, Receive]:
        """Whether the request asks to stream (read from the JSON body of generation routes), as far as the
        permission check needs it: for a caller allowed to stream it cannot change the decision, so the body
        (megabytes, parsed on the event loop) is not read for it."""
        if path.path in STREAM_ONLY_ROUTES:
            return True, receive
        if path.path not in ROUTE_PERMISSIONS or scope["method"] != "POST":
            return False, receive
        if caller.allows(Permission.GENERATE_STREAM):
            return False, receive
        buffered = await buffer_body(receive)
        if buffered is None:
            return None, receive
        body, replaying = buffered
        return wants_stream(body), replaying

    async def _spent_budget(self, caller: KeyInfo) -> BudgetExceeded | None:
        """The caller's spent budget, if any. A failure to read the usage admits the request (logged)."""
        if not caller.budgets.is_set:
            return None
        try:
            return await self.gateway.budgets.check(caller)
        except Exception:
            logger.exception("budgets of key %s could not be checked; the request is admitted", caller.id)
            return None

    async def _rate_limit(self, caller: KeyInfo, needed: frozenset[Permission]) -> RateDecision | None:
        """The limiter's decision, or None when unlimited: limits off, the master key, admin routes.

        When the counter store fails, `rate_limit.fail_open` decides: admit unchecked (None) or raise
        RateLimitStoreDown (503). Either way the failure is counted and logged, at most once per interval.
        """
        limiter = self.gateway.limiter
        if limiter is None or caller.is_master or Permission.ADMIN in needed:
            return None
        try:
            return await limiter.check(caller.id, self.gateway.limits_for(caller))
        except Exception as error:
            self.gateway.metrics.rate_limit_store_errors.inc()
            self._log_store_error(error)
            if self.rate_limit_fail_open:
                return None
            raise RateLimitStoreDown from error

    def _charger(self, caller: KeyInfo):
        """What the services call once a request is prepared: its full cost charged to the caller's limits."""
        limiter, limits = self.gateway.limiter, self.gateway.limits_for(caller)

        async def charge(cost: RequestCost) -> None:
            try:
                decision = await limiter.charge(caller.id, limits, sequences=cost.sequences, tokens=cost.tokens)
            except Exception as error:
                self.gateway.metrics.rate_limit_store_errors.inc()
                self._log_store_error(error)
                if self.rate_limit_fail_open:
                    return
                raise _StoreDownError(
                    "rate limits cannot be checked right now; retry after the time in Retry-After",
                    code="rate_limit_unavailable",
                ) from error
            if not decision.allowed:
                self.gateway.metrics.rate_limit_rejections.inc()
                raise RateLimitedError(
                    f"rate limit exceeded ({decision.limited_by}); retry after the time in Retry-After",
                    decision.headers(),
                )

        return charge

    def _log_store_error(self, error: Exception) -> None:
        now = time.monotonic()
        if self._store_error_logged_at is not None and now - self._store_error_logged_at < STORE_ERROR_LOG_INTERVAL_S:
            return
        self._store_error_logged_at = now
        outcome = "admitted without a limit check" if self.rate_limit_fail_open else "refused with 503"
        logger.error(
            "rate-limit store unavailable (%s: %s); requests are %s (rate_limit.fail_open=%s)",
            type(error).__name__,
            error,
            outcome,
            self.rate_limit_fail_open,
        )

    def _count(self, scope: Scope, exchange: _Exchange) -> None:
        self.gateway.metrics.observe_request(_route_template(scope), exchange.status)
