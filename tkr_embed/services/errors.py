"""Typed errors the services raise; the API's one handler turns them into the OpenAI error shape."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the server refuses; `status` is the HTTP status, `param` names the field."""

    status: int = 400
    error_type: str = "invalid_request_error"
    headers: dict[str, str] | None = None  # response headers the error comes with (Retry-After...)

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class BadRequestError(ServiceError):
    status = 400


class ModelNotFoundError(ServiceError):
    status = 404
    error_type = "not_found_error"


class RateLimitedError(ServiceError):
    """The request's full cost (its sequences and tokens, known once it is prepared) exceeds the caller's
    rate limits; `headers` carries Retry-After and x-ratelimit-*."""

    status = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(message, code="rate_limit_exceeded")
        self.headers = headers


class ClientDisconnectedError(Exception):
    """The client went away before the answer was ready; its engine request was aborted."""
