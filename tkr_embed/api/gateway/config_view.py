"""The settings as /admin/config shows them: every secret replaced, passwords cut out of URLs."""

from __future__ import annotations

import re
from typing import Any

from tkr_embed.config import Settings
from tkr_embed.logging import REDACTED

# (section, field) pairs that hold a secret outright.
SECRET_FIELDS: frozenset[tuple[str, str]] = frozenset({("security", "api_key"), ("security", "secret_key")})
# Fields holding URLs that may carry a password (redis://:pw@host, postgresql://user:pw@host/db?password=...).
URL_FIELDS: frozenset[tuple[str, str]] = frozenset(
    {("storage", "database_url"), ("storage", "redis_url"), ("rate_limit", "redis_url")}
)
_URL_PASSWORD = re.compile(r"(?P<head>://[^/@:]*:)[^/@]*@")
_QUERY_PASSWORD = re.compile(r"(?i)(?P<head>[?&](?:password|pass|pwd|secret|token)=)[^&#]*")


def redact_url(url: str) -> str:
    """`url` with its password (userinfo or query) replaced by [REDACTED]."""
    url = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{REDACTED}@", url)
    return _QUERY_PASSWORD.sub(lambda m: f"{m.group('head')}{REDACTED}", url)


def redacted_settings(settings: Settings) -> dict[str, Any]:
    config = settings.model_dump(mode="json")
    for section, field in SECRET_FIELDS:
        if config.get(section, {}).get(field):
            config[section][field] = REDACTED
    for section, field in URL_FIELDS:
        value = config.get(section, {}).get(field)
        if value:
            config[section][field] = redact_url(value)
    config["auth_required"] = settings.auth_required
    return config
