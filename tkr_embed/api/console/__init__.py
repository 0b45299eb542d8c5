"""The web console at /console: one page and its scripts and styles, served from the package (`static/`).

The page and its assets are public (api/gateway/paths.py): they hold no secret. The admin key the user signs in
with stays in the browser's session storage, and every API call the page makes carries it in a header.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

from tkr_embed.api.gateway.paths import CONSOLE_ASSETS_PATH, CONSOLE_PATH

STATIC_DIR = Path(__file__).parent / "static"
# Scripts and styles only from this server, no inline code, no framing, no referrer: a page that handles an
# admin key gives an injected script, a framing site or a referrer log nothing to work with.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def install_console(app: FastAPI) -> None:
    """Add GET /console and its assets under CONSOLE_ASSETS_PATH."""
    app.mount(CONSOLE_ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="console-assets")

    @app.get(CONSOLE_PATH, include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=SECURITY_HEADERS)
