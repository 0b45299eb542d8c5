"""The path the auth decision is made on, and which paths need no key.

The decision must not be steerable by spelling: `//v1/chat/completions`, `/v1/%63hat/completions`,
`/v1/chat/completions/` and the Host header all lead to the same decision as the canonical path.
Dot segments are refused outright: the router does not resolve them, so `/v1/models/../../health`
would reach a protected handler while looking public once resolved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

HEALTH_PATH = "/health"  # reachable over plain HTTP even with security.require_https (load-balancer probes)
# The web console (api/console/): the page and its assets hold no secret; its API calls carry the admin key.
CONSOLE_PATH = "/console"
CONSOLE_ASSETS_PATH = "/console/assets"
PUBLIC_PATHS: frozenset[str] = frozenset(
    {HEALTH_PATH, "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc", CONSOLE_PATH}
)
# The scripts, styles and icon of the public documentation pages (api/docs_pages.py): public as the pages are.
DOCS_ASSETS_PATH = "/docs/assets"
PUBLIC_ASSET_PREFIXES = (DOCS_ASSETS_PATH + "/", CONSOLE_ASSETS_PATH + "/")
METRICS_PATH = "/metrics"
_SLASHES = re.compile(r"/{2,}")
_MAX_DECODE_ROUNDS = 4


@dataclass(frozen=True)
class NormalisedPath:
    path: str  # canonical: one leading slash, no repeated or trailing slash, decoded
    has_dot_segments: bool  # "." or ".." somewhere: refused

    @property
    def is_public(self) -> bool:
        if self.has_dot_segments:
            return False
        return self.path in PUBLIC_PATHS or self.path.startswith(PUBLIC_ASSET_PREFIXES)


def normalise_path(raw: str) -> NormalisedPath:
    """Decode %-escapes until stable (a double-encoded path decodes fully), collapse slashes,
    drop the trailing slash; note dot segments. Backslashes count as slashes."""
    path = raw
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = path.replace("\\", "/")
    path = "/" + _SLASHES.sub("/", path).strip("/")
    segments = path.split("/")
    has_dots = any(segment in (".", "..") for segment in segments)
    return NormalisedPath(path=path, has_dot_segments=has_dots)
