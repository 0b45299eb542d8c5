"""Key permissions and which ones a route needs."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from tkr_embed.security.errors import GatewayInputError


class Permission(StrEnum):
    GENERATE_TEXT = "generate:text"
    GENERATE_CHAT = "generate:chat"
    GENERATE_STREAM = "generate:stream"
    ADMIN = "admin"


# What a new key gets when the caller names no permissions: every generation route, no admin.
DEFAULT_PERMISSIONS: frozenset[Permission] = frozenset(
    {Permission.GENERATE_TEXT, Permission.GENERATE_CHAT, Permission.GENERATE_STREAM}
)
ALL_PERMISSIONS: frozenset[Permission] = frozenset(Permission)


def parse_permissions(values: Iterable[str] | str | None) -> frozenset[Permission]:
    """Permissions from names (a list or one comma-separated string); None or empty gives the default set.

    Raises GatewayInputError naming the first unknown permission.
    """
    if values is None:
        return DEFAULT_PERMISSIONS
    names = values.split(",") if isinstance(values, str) else list(values)
    names = [name.strip() for name in names if name.strip()]
    if not names:
        return DEFAULT_PERMISSIONS
    parsed: set[Permission] = set()
    for name in names:
        try:
            parsed.add(Permission(name))
        except ValueError:
            allowed = ", ".join(sorted(p.value for p in Permission))
            raise GatewayInputError(f"unknown permission {name!r}; allowed: {allowed}", "permissions") from None
    return frozenset(parsed)


def grants(held: Iterable[Permission], needed: Permission) -> bool:
    """Whether a key holding `held` may do what `needed` guards; admin may do everything."""
    held_set = frozenset(held)
    return Permission.ADMIN in held_set or needed in held_set


# Routes any valid key may read (model list, server info): authentication only, no permission.
AUTHENTICATED_ROUTES: frozenset[str] = frozenset({"/v1/models", "/info", "/models", "/tokenizer_info"})
# ...and every path under these prefixes (GET /v1/models/{model}).
AUTHENTICATED_PREFIXES: tuple[str, ...] = ("/v1/models/",)
ROUTE_PERMISSIONS: dict[str, Permission] = {
    "/v1/chat/completions": Permission.GENERATE_CHAT,
    "/v1/responses": Permission.GENERATE_CHAT,
    "/chat": Permission.GENERATE_CHAT,
    "/v1/completions": Permission.GENERATE_TEXT,
    "/generate": Permission.GENERATE_TEXT,
    "/stream": Permission.GENERATE_TEXT,
    # The prompt a generation request would send, without generating: the same key may ask.
    "/tokenize": Permission.GENERATE_TEXT,
    "/detokenize": Permission.GENERATE_TEXT,
}
# ...and every path under these prefixes: a stored response is read, listed and deleted with the key that may
# create it (GET/DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items).
PREFIX_PERMISSIONS: tuple[tuple[str, Permission], ...] = (("/v1/responses/", Permission.GENERATE_CHAT),)
STREAM_ONLY_ROUTES: frozenset[str] = frozenset({"/stream"})


def required_permissions(route: str, stream: bool = False) -> frozenset[Permission]:
    """The permissions a request to `route` (normalised path, no query) needs; streaming adds generate:stream.

    Unknown routes (and /admin/..., /metrics) need admin: a new route stays closed until someone
    decides who may call it.
    """
    if route in AUTHENTICATED_ROUTES or route.startswith(AUTHENTICATED_PREFIXES):
        return frozenset()
    base = ROUTE_PERMISSIONS.get(route)
    if base is None:
        base = next((permission for prefix, permission in PREFIX_PERMISSIONS if route.startswith(prefix)), None)
    if base is None:
        return frozenset({Permission.ADMIN})
    if stream or route in STREAM_ONLY_ROUTES:
        return frozenset({base, Permission.GENERATE_STREAM})
    return frozenset({base})
