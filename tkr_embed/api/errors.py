"""One place for the routes' errors: typed errors become `{"error": {...}, "error_id"}` responses (never a 500 for
bad input), and the error statuses each router documents in the OpenAPI schema."""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from tkr_embed.engine.errors import EngineDeadError, EngineOverloadedError, InvalidRequestError
from tkr_embed.protocol.errors import ErrorDetail, ErrorResponse
from tkr_embed.services.errors import ClientDisconnectedError, ServiceError

logger = logging.getLogger("tkr_embed.api")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    409: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
CLIENT_CLOSED_REQUEST = 499
# The error statuses a route may document, each with the one error body every handler below returns.
ROUTE_ERRORS: dict[int, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 409, 413, 503)
}
# What FastAPI says when the body could not be read as JSON for a reason other than a syntax error
# (invalid UTF-8, nesting too deep for the parser).
_FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"
# Pydantic's names for the branches of a union (`str | list[int]`), which are not field names.
_UNION_BRANCHES = {"str", "int", "float", "bool", "none", "dict", "list"}


def route_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A router's `responses=`: the error statuses its routes may answer, as ROUTE_ERRORS documents them."""
    return {status: dict(ROUTE_ERRORS[status]) for status in statuses}


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None, error_type: str | None = None
) -> ErrorResponse:
    error_type = error_type or ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return ErrorResponse(
        error=ErrorDetail(message=message, type=error_type, param=param, code=code), error_id=uuid.uuid4().hex
    )


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    error_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(status, message, param, code, error_type)
    if status >= 500:
        logger.warning("error %s (%d): %s", body.error_id, status, message)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def field_path(loc: tuple | list) -> str | None:
    """("body", "messages", 0, "role") → "messages[0].role"."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in str(part) or "-" in str(part) and not str(part).isidentifier() or part in _UNION_BRANCHES:
            continue  # pydantic's union-branch tags, e.g. "function-after[...]" or "str", are not field names
        else:
            path += f".{part}" if path else str(part)
    return path or None


def validation_message(error: dict) -> tuple[str, str | None]:
    param = field_path(error.get("loc", ()))
    kind = error.get("type", "")
    if kind == "json_invalid":
        return "the request body is not valid JSON", None
    if param is None and kind in ("model_attributes_type", "dict_type", "model_type"):
        return "the request body must be a JSON object", None
    if param is None and kind == "missing":
        return "the request body is missing (send a JSON object)", None
    if kind == "extra_forbidden":
        return f"unknown field {param!r}", param
    if kind == "finite_number":
        return f"{param}: must be a finite number (NaN and Infinity are not)", param
    return (f"{param}: {error.get('msg', 'invalid value')}" if param else error.get("msg", "invalid request")), param


def is_json_content_type(value: str | None) -> bool:
    media_type = (value or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def _validation_handler(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    content_type = request.headers.get("content-type")
    if request.method == "POST" and content_type and not is_json_content_type(content_type):
        # FastAPI reads a body as JSON only when it is declared so (or undeclared); say that rather than
        # "missing field" for a form or text body.
        return error_response(
            415,
            f"the request body must be JSON sent with Content-Type: application/json (got {content_type})",
            code="unsupported_media_type",
        )
    # Name a missing required top-level field first, whatever order the model's fields were checked in
    # (deeper "missing" errors can come from the union branch that did not apply, so they keep their place).
    errors = sorted(errors, key=lambda error: not (error.get("type") == "missing" and len(error.get("loc", ())) <= 2))
    message, param = validation_message(errors[0]) if errors else ("invalid request", None)
    return error_response(400, message, param)


async def _service_handler(request: Request, exc: ServiceError) -> Response:
    return error_response(exc.status, exc.message, exc.param, exc.code, exc.error_type, headers=exc.headers)


async def _engine_invalid_handler(request: Request, exc: InvalidRequestError) -> Response:
    return error_response(400, exc.message, exc.param)


async def _overloaded_handler(request: Request, exc: EngineOverloadedError) -> Response:
    retry_after = str(max(1, math.ceil(exc.retry_after_s)))
    return error_response(503, exc.message, code="server_overloaded", headers={"Retry-After": retry_after})


# What a generation request is told while the server cannot take it, by the server's phase (api/lifecycle.py).
PHASE_REFUSALS = {
    "starting": "the model is still loading; retry after the time in Retry-After",
    "draining": "the server is shutting down; retry after the time in Retry-After (another replica may answer)",
    "engine_dead": "the engine is not running; retry after the time in Retry-After",
    "restarting": "the engine is restarting; retry after the time in Retry-After",
}
PHASE_RETRY_AFTER_S = 5  # a replica behind the same balancer may answer sooner


def phase_refusal(phase: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The 503 for a generation request while the server is in `phase` (a key of PHASE_REFUSALS)."""
    return error_response(
        503, PHASE_REFUSALS[phase], code=phase, headers={"Retry-After": str(PHASE_RETRY_AFTER_S), **(headers or {})}
    )


async def _dead_handler(request: Request, exc: EngineDeadError) -> Response:
    phase = str(getattr(getattr(request.app.state, "lifecycle", None), "status", ""))
    if phase in PHASE_REFUSALS:
        return phase_refusal(phase)
    return error_response(503, "the engine is not running", code="engine_unavailable", headers={"Retry-After": "5"})


async def _http_handler(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_PARSE_ERROR:
        return error_response(
            400,
            "the request body is not valid JSON (it must be UTF-8 text, nested at most a few hundred levels deep)",
            code="invalid_json",
        )
    return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _disconnected_handler(request: Request, exc: ClientDisconnectedError) -> Response:
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected_handler(request: Request, exc: Exception) -> Response:
    body = error_body(500, "internal server error")
    logger.exception("unexpected error %s on %s", body.error_id, request.url.path)
    return JSONResponse(body.model_dump(), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ServiceError, _service_handler)
    app.add_exception_handler(InvalidRequestError, _engine_invalid_handler)
    app.add_exception_handler(EngineOverloadedError, _overloaded_handler)
    app.add_exception_handler(EngineDeadError, _dead_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(ClientDisconnectedError, _disconnected_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
