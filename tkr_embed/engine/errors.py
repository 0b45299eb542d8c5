"""Typed errors the engine raises; the HTTP layer maps them to 4xx/503 responses."""

from __future__ import annotations


class EngineError(Exception):
    """Base class for every error raised by the engine."""


class InvalidRequestError(EngineError, ValueError):
    """The request can never be served as asked (bad parameter, prompt too long...).

    `param` names the offending field as the client spelled it (e.g. "max_tokens"), for the
    OpenAI error shape.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ConfigurationError(EngineError, ValueError):
    """The engine's configuration can never work (a setting out of range); raised at start-up, never per request.

    `setting` names the offending key as EngineArgs spells it (e.g. "max_num_seqs").
    """

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.setting = setting


class EngineOverloadedError(EngineError):
    """The waiting queue is full; the caller should retry later (HTTP 503 + Retry-After)."""

    def __init__(self, message: str = "server is overloaded, retry later", retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class EngineDeadError(EngineError):
    """The engine loop stopped (shutdown or crash); no new requests are accepted."""
