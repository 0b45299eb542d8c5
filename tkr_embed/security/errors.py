"""Typed errors of the gateway (keys, permissions); the HTTP layer maps them to 4xx responses."""

from __future__ import annotations


class GatewayInputError(ValueError):
    """A caller-supplied value is invalid (HTTP 400). `param` names the field as the client spelled it."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class KeyNotFoundError(LookupError):
    """No API key has this id (HTTP 404)."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id {key_id!r}")
        self.key_id = key_id


class KeyRevokedError(LookupError):
    """The API key was revoked: it can no longer be changed nor rotated (HTTP 409)."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"the API key {key_id!r} is revoked and cannot be changed")
        self.key_id = key_id
