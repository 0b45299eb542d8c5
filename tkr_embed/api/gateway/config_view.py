"""The settings as /admin/config shows them: every secret replaced, passwords cut out of URLs."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus, urlsplit

from tkr_embed.config import Settings
from tkr_embed.logging import REDACTED

# (section, field) pairs that hold a secret outright.
SECRET_FIELDS: frozenset[tuple[str, str]] = frozenset({("security", "api_key"), ("security", "secret_key")})
# Fields holding URLs that may carry a password (redis://:pw@host, postgresql://user:pw@host/db?password=...).
URL_FIELDS: frozenset[tuple[str, str]] = frozenset(
    {("storage", "database_url"), ("storage", "redis_url"), ("rate_limit", "redis_url")}
)
_SECRET_QUERY_NAMES = frozenset({"password", "pass", "pwd", "secret", "token"})


def redact_url(url: str) -> str:
    """`url` with its password (userinfo or query) replaced by [REDACTED].

    The userinfo ends at the authority's last `@`, as URL parsers (and so the Redis and database clients) read
    it: a password holding `@` is hidden whole. Userinfo without a `:` may be a password alone (some Redis
    clients read it so) and is hidden too."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    # Edited in place: rebuilding the URL from its parts would respell it (`sqlite:////data` has an empty host).
    if "@" in parts.netloc:
        userinfo, _, host = parts.netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{host}" if colon else f"{REDACTED}@{host}"
        url = url.replace(f"//{parts.netloc}", f"//{netloc}", 1)
    if parts.query:
        query = "&".join(_redact_query_item(item) for item in parts.query.split("&"))
        url = url.replace(f"?{parts.query}", f"?{query}", 1)
    return url


def _redact_query_item(item: str) -> str:
    name, equals, _ = item.partition("=")
    return f"{name}={REDACTED}" if equals and unquote_plus(name).lower() in _SECRET_QUERY_NAMES else item


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
