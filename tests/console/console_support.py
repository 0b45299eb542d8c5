"""Helpers of the console tests: a page that fails its test on any script error, and sign-in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway_support import MASTER_KEY

LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@contextmanager
def console_page(browser: Any, url: str, **context_options: Any) -> Iterator[Any]:
    """A fresh browser context (its own session storage) on /console. A script error, an error logged to the
    console or a request for another host fails the test: a broken page must not pass."""
    context = browser.new_context(viewport=context_options.pop("viewport", LAPTOP), **context_options)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: message.type == "error" and problems.append(f"console error: {message.text}"))
    page.on(
        "request", lambda request: request.url.startswith(url) or problems.append(f"request elsewhere: {request.url}")
    )
    page.set_default_timeout(15_000)
    page.goto(f"{url}/console")
    try:
        yield page
    finally:
        context.close()
    assert not [p for p in problems if not _expected(p)], problems


def _expected(problem: str) -> bool:
    # The browser logs each refused API call (401, 404 ...) as a console error; the tests that cause one check
    # what the page shows instead.
    return problem.startswith("console error: Failed to load resource")


def sign_in(page: Any, key: str = MASTER_KEY) -> None:
    page.get_by_label("Admin key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="API keys").wait_for()


def shoot(page: Any, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    return path
