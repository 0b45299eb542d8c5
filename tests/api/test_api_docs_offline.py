"""/docs and /redoc load nothing from outside the server: their scripts, styles and icon come from the package,
answer with the right content type, and need no key, as the pages themselves (auth on)."""

from __future__ import annotations

import fnmatch
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "gateway"))

from gateway_support import gateway_server  # noqa: E402

from tkr_embed.api.docs_pages import STATIC_DIR  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONTENT_TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",), ".png": ("image/png",)}
REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with gateway_server(tmp_path_factory.mktemp("docs")) as server:
        yield server.url


def references(html: str) -> list[str]:
    return [first or second for first, second in REFERENCE.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_page_references_nothing_outside_the_server(url: str, page: str) -> None:
    response = httpx.get(url + page)  # no key: the pages are public
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert re.findall(r"(?:https?:)?//[\w.-]+", response.text) == []
    found = references(response.text)
    assert "/openapi.json" in found and len(found) >= 2
    for reference in found:
        asset = httpx.get(url + reference)
        assert asset.status_code == 200, reference
        suffix = Path(reference).suffix
        if suffix in CONTENT_TYPES:
            assert asset.headers["content-type"].startswith(CONTENT_TYPES[suffix]), reference
            assert len(asset.content) > 500  # the file itself, not an error page


def test_the_pages_load_the_vendored_bundles(url: str) -> None:
    swagger, redoc = httpx.get(url + "/docs").text, httpx.get(url + "/redoc").text
    assert {"/docs/assets/swagger-ui/swagger-ui-bundle.js", "/docs/assets/swagger-ui/swagger-ui.css"} <= set(
        references(swagger)
    )
    assert "/docs/assets/redoc/redoc.standalone.js" in references(redoc)
    bundle = httpx.get(url + "/docs/assets/swagger-ui/swagger-ui-bundle.js")
    assert bundle.content == (STATIC_DIR / "swagger-ui" / "swagger-ui-bundle.js").read_bytes()


def test_assets_are_public_but_do_not_open_other_paths(url: str) -> None:
    assert httpx.get(url + "/docs/assets/redoc/LICENSE").status_code == 200
    assert httpx.get(url + "/docs/assets/no-such-file.js").status_code == 404
    assert httpx.get(url + "/docs/assets/%2e%2e/%2e%2e/admin/stats").status_code == 400
    assert httpx.get(url + "/docs/assetsX/admin").status_code == 401  # the public prefix is a folder, not a string


def test_every_vendored_file_ships_as_package_data() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["tkr_embed.api"]
    package_dir = REPO / "tkr_embed" / "api"
    files = [path.relative_to(package_dir).as_posix() for path in STATIC_DIR.rglob("*") if path.is_file()]
    assert {"static/swagger-ui/LICENSE", "static/redoc/LICENSE", "static/README.md"} <= set(files)
    assert [name for name in files if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns)] == []
