"""Typed errors the services raise; the API's one handler turns them into the OpenAI error shape."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the server refuses; `status` is the HTTP status, `param` names the field."""

    status: int = 400
    error_type: str = "invalid_request_error"

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


class ClientDisconnectedError(Exception):
    """The client went away before the answer was ready; its engine request was aborted."""
