"""/console is served by the server itself, without a key, with a policy that keeps the page to this server;
the admin API behind it still needs the admin key."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import httpx
from gateway_support import GatewayServer

from tkr_embed.api.console import STATIC_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_page_and_its_assets_need_no_key_and_load_nothing_from_elsewhere(server: GatewayServer) -> None:
    page = httpx.get(f"{server.url}/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    assets = re.findall(r'(?:src|href)="(console/assets/[^"]+)"', page.text)
    assert sorted(assets) == ["console/assets/app.js", "console/assets/console.css"]
    assert "http://" not in page.text and "https://" not in page.text
    for asset in assets:
        response = httpx.get(f"{server.url}/{asset}")
        assert response.status_code == 200, asset
    script = httpx.get(f"{server.url}/console/assets/app.js")
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))


def test_every_module_the_scripts_import_is_served(server: GatewayServer) -> None:
    for script in STATIC_DIR.glob("*.js"):
        for imported in re.findall(r'from "\./([^"]+)"', script.read_text()):
            assert httpx.get(f"{server.url}/console/assets/{imported}").status_code == 200, (script.name, imported)


def test_the_admin_api_behind_the_console_still_needs_the_key(server: GatewayServer) -> None:
    assert httpx.get(f"{server.url}/admin/api-keys").status_code == 401
    assert httpx.get(f"{server.url}/console/assets/../../admin/api-keys").status_code in (400, 401, 404)
    assert httpx.get(f"{server.url}/console/assets/missing.js").status_code == 404


def test_the_console_files_ship_in_the_package() -> None:
    package_data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data["tkr_embed.api.console"]
    files = [path.relative_to(STATIC_DIR.parent).as_posix() for path in STATIC_DIR.iterdir()]
    assert "static/index.html" in files
    assert [name for name in files if not any(fnmatch(name, pattern) for pattern in patterns)] == []
