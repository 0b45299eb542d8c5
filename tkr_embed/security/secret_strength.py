"""Refuse, at start-up in production, a master key or server secret that someone could guess: the placeholders
that example configs and tutorials carry (`your-api-key-here`, `changeme`, ...) and values with almost no
variety (`aaaaaaaaaaaaaaaa`, `1212121212121212`). The length rules live with the settings (config.py)."""

from __future__ import annotations

import re

from tkr_embed.config import ConfigError, Settings

# Placeholders as written in examples, compared without case or separators ("Your_API-Key here" matches).
_PLACEHOLDERS = frozenset(
    {
        "yourapikeyhere",
        "yourapikey",
        "yourkeyhere",
        "yourkey",
        "yoursecretkeyhere",
        "yoursecretkey",
        "yoursecrethere",
        "yoursecret",
        "yourmasterkey",
        "yourmasterkeyhere",
        "yourtokenhere",
        "apikeyhere",
        "insertapikeyhere",
        "insertkeyhere",
        "enterapikeyhere",
        "putyourapikeyhere",
        "replacewithyourapikey",
        "replacewithyourkey",
        "replacewithasecret",
        "changeme",
        "changemeplease",
        "pleasechangeme",
        "changethis",
        "changethiskey",
        "changethissecret",
        "changeit",
        "replaceme",
        "secret",
        "secretkey",
        "mysecret",
        "mysecretkey",
        "supersecret",
        "supersecretkey",
        "topsecret",
        "password",
        "password123",
        "apikey",
        "myapikey",
        "masterkey",
        "adminkey",
        "adminadmin",
        "admin123",
        "test",
        "testkey",
        "testapikey",
        "testsecret",
        "example",
        "examplekey",
        "exampleapikey",
        "default",
        "defaultkey",
        "letmein",
        "qwertyuiop",
        "abcdefghijklmnop",
        "abcdefghijklmnopqrstuvwxyz",
        "1234567890123456",
        "0123456789abcdef",
        "xxxxxxxxxxxxxxxx",
    }
)
_PLACEHOLDER_WORDS = re.compile(r"(yourapikey|yoursecret|yourkey|changeme|replaceme|placeholder|insertyour)")
_MIN_DISTINCT_CHARACTERS = 6


def weakness(value: str) -> str | None:
    """Why `value` is a guessable secret, or None."""
    folded = re.sub(r"[^a-z0-9]", "", value.lower())
    if folded in _PLACEHOLDERS or _PLACEHOLDER_WORDS.search(folded):
        return "it is a placeholder from an example"
    if len(set(value)) < _MIN_DISTINCT_CHARACTERS:
        return f"it has fewer than {_MIN_DISTINCT_CHARACTERS} different characters"
    return None


def refuse_weak_secrets(settings: Settings) -> None:
    """Raise ConfigError naming the setting when production would run with a guessable master key or secret."""
    if settings.env != "production" or not settings.auth_required:
        return
    for name, env_name, value in (
        ("security.api_key", "GENERATION_API_KEY", settings.security.api_key),
        ("security.secret_key", "GENERATION_SECRET_KEY", settings.security.secret_key),
    ):
        reason = weakness(value) if value else None
        if reason is not None:
            raise ConfigError(
                f"{name} ({env_name}) is too easy to guess for production: {reason}; "
                "use a random value, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
