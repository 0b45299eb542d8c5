"""Structured logs: one JSON object a line, the request id on every line, secrets never written.

`configure_logging()` installs one handler on the root logger. Its filter redacts API keys,
`Authorization` / `X-API-Key` values, `api_key=` query values (however percent-encoded: uvicorn's access
log writes the query string as the client sent it) and registered literal secrets from the message, its
arguments, extra fields and tracebacks; the formatter scrubs the final line once more.
Run uvicorn with `log_config=None` so its loggers propagate here.
"""

from __future__ import annotations

import json as json_module
import logging
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import unquote_plus

REDACTED = "[REDACTED]"


def _header_value(match: re.Match[str]) -> str:
    scheme = f"{match.group(3)} " if match.group(3) else ""
    return f"{match.group(1)}{match.group(2)}{scheme}{REDACTED}"


request_id_var: ContextVar[str | None] = ContextVar("tkr_request_id", default=None)

_PATTERNS: tuple[tuple[re.Pattern[str], Any], ...] = (
    # Our API keys wherever they appear.
    (re.compile(r"tkr_[A-Za-z0-9]{8,}"), REDACTED),
    # Authorization / X-API-Key header values, as "name: value", "name=value" or JSON/dict "name": "value".
    (
        re.compile(
            r"""(?i)((?:proxy-)?authorization|x-api-key|api-key)(["']?\s*[:=]\s*["']?)(?:(bearer|basic|token)\s+)?[^\s"',;&}]+"""
        ),
        _header_value,
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 " + REDACTED),
    # Query and form values: ?api_key=..., &access_token=...
    (re.compile(r"(?i)\b(api_key|api-key|apikey|access_token|secret_key)=[^&\s\"'#]+"), r"\1=" + REDACTED),
)
# A query parameter as a URL carries it; its name and value are judged percent-decoded.
_QUERY_ITEM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;\s#\"'?]+)=(?P<value>[^&;\s#\"']*)")
_SECRET_QUERY_NAMES = frozenset({"api_key", "api-key", "apikey", "access_token", "secret_key", "token", "password"})
_SECRET_FIELDS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api_key",
        "api-key",
        "x-api-key",
        "x_api_key",
        "apikey",
        "password",
        "secret",
        "secret_key",
        "token",
        "access_token",
    }
)
_secrets: set[str] = set()
_secrets_lock = threading.Lock()

# Attributes every LogRecord has; anything else on a record came from `extra=` and is written as a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
}


def register_secret(value: str | None) -> None:
    """Scrub this exact value (the master key, the server secret) from every later log line."""
    if value and len(value) >= 8:
        with _secrets_lock:
            _secrets.add(value)


def _scrub(text: str) -> str:
    with _secrets_lock:
        literals = sorted(_secrets, key=len, reverse=True)
    for literal in literals:
        text = text.replace(literal, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _query_item(match: re.Match[str]) -> str:
    value = match["value"]
    if unquote_plus(match["name"]).lower() in _SECRET_QUERY_NAMES:
        return f"{match['lead']}{match['name']}={REDACTED}"
    if "%" in value or "+" in value:
        decoded = unquote_plus(value)
        if _scrub(decoded) != decoded:
            return f"{match['lead']}{match['name']}={REDACTED}"
    return match.group(0)


def redact(text: str) -> str:
    """`text` with every key, credential header value and registered secret replaced by [REDACTED]."""
    text = _scrub(text)
    if "=" in text:
        text = _QUERY_ITEM.sub(_query_item, text)
    return text


def redact_value(value: Any, field_name: str | None = None) -> Any:
    """A copy of a field value fit for logs: secret-named fields blanked, strings scrubbed, containers walked."""
    if field_name is not None and field_name.lower() in _SECRET_FIELDS:
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(key): redact_value(item, str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item) for item in value]
    return redact(str(value))


class RedactionFilter(logging.Filter):
    """Scrubs a record in place (message, arguments, extra fields, traceback) and stamps its request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        # Render first, then scrub: a key split between the format string and its arguments is caught too.
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not stop the log line
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRIBUTES:
                setattr(record, name, redact_value(value, name))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, request_id, extra fields, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and name not in entry:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return redact(json_module.dumps(entry, default=str, ensure_ascii=False))


class RedactingTextFormatter(logging.Formatter):
    """Human-readable lines for development, scrubbed like the JSON ones."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return redact(super().format(record))


def configure_logging(level: str | int = "INFO", json: bool = True, stream: IO[str] | None = None) -> logging.Handler:
    """Route every logger through one redacting handler on the root logger (idempotent); returns it."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tkr_handler", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._tkr_handler = True  # type: ignore[attr-defined]
    handler.addFilter(RedactionFilter())
    handler.setFormatter(JsonFormatter() if json else RedactingTextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's own handlers would print unredacted lines beside ours.
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
        uvicorn_logger.disabled = False
        uvicorn_logger.setLevel(logging.NOTSET)  # the root level decides, as for every other logger
    return handler


@contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Every log line written inside carries this request id (per task: contextvars)."""
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)
