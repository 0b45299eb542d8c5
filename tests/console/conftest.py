"""Fixtures of the console tests: a live gateway server over the fake engine, and Debian's Chromium driven by
Playwright (never Playwright's own browser download). Screenshots of every page are kept as test artifacts in
TKR_CONSOLE_SCREENSHOTS, or else in pytest's temporary folder; the path is printed at the end of the run."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "gateway"))

from gateway_support import GatewayServer, gateway_server  # noqa: E402

# Debian's chromium (make services installs it); on macOS, a Chrome or Chromium the user has installed.
CHROMIUM_PATHS = (
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
)
SCREENSHOTS = pytest.StashKey[Path]()


def chromium_path() -> str | None:
    found = next((path for path in CHROMIUM_PATHS if os.access(path, os.X_OK)), None)
    return found or shutil.which("chromium")


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("TKR_CONSOLE_SCREENSHOTS")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    request.config.stash[SCREENSHOTS] = folder
    return folder


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    folder = config.stash.get(SCREENSHOTS, None)
    if folder is not None:
        terminalreporter.write_line(f"console screenshots: {folder}")


# Per module: Playwright's sync API runs an event loop of its own, closed with it before the asyncio tests of
# other folders run.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("TKR_TEST_SERVICES_REQUIRED") and sys.platform != "darwin":
            pytest.fail("chromium is not installed (make services installs it)")
        pytest.skip("no Chromium or Google Chrome found (on Linux, make services installs chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start; a container's /dev/shm may be too
        # small for its shared memory.
        launched = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with gateway_server(tmp_path_factory.mktemp("console"), rate_limit={"enabled": False}) as running:
        yield running
