"""`/docs` (Swagger UI) and `/redoc` (ReDoc) with their scripts, styles and icon served from the package
(`api/static/`, see its README), so both pages work without internet; FastAPI's own pages load them from a CDN.
Everything under DOCS_ASSETS_PATH is public, as the pages are (api/gateway/paths.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from tkr_embed.api.gateway.paths import DOCS_ASSETS_PATH

STATIC_DIR = Path(__file__).parent / "static"
SWAGGER_UI_JS = f"{DOCS_ASSETS_PATH}/swagger-ui/swagger-ui-bundle.js"
SWAGGER_UI_CSS = f"{DOCS_ASSETS_PATH}/swagger-ui/swagger-ui.css"
REDOC_JS = f"{DOCS_ASSETS_PATH}/redoc/redoc.standalone.js"
FAVICON = f"{DOCS_ASSETS_PATH}/swagger-ui/favicon-32x32.png"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
# Swagger UI would otherwise ask validator.swagger.io about the schema of a server not on localhost.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


def install_docs(app: FastAPI) -> None:
    """Add the two pages, Swagger UI's OAuth2 redirect and the assets to an app made with docs_url=None and
    redoc_url=None."""
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="docs-assets")

    def prefixed(request: Request, path: str) -> str:
        return request.scope.get("root_path", "").rstrip("/") + path

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=prefixed(request, app.openapi_url or "/openapi.json"),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=prefixed(request, SWAGGER_UI_JS),
            swagger_css_url=prefixed(request, SWAGGER_UI_CSS),
            swagger_favicon_url=prefixed(request, FAVICON),
            oauth2_redirect_url=prefixed(request, OAUTH2_REDIRECT_PATH),
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=prefixed(request, app.openapi_url or "/openapi.json"),
            title=f"{app.title} - ReDoc",
            redoc_js_url=prefixed(request, REDOC_JS),
            redoc_favicon_url=prefixed(request, FAVICON),
            with_google_fonts=False,
        )
