"""The console in Debian's Chromium against a live server: sign in, create a key and use it from the openai SDK,
watch the usage chart count it, revoke the key and see its next request refused."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from console_support import console_page, shoot, sign_in
from gateway_support import MASTER_KEY, GatewayServer

from tkr_embed.security.hashing import KEY_PREFIX


def sdk(server: GatewayServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def ask(server: GatewayServer, key: str) -> str:
    reply = sdk(server, key).chat.completions.create(model="gpt-oss-fake", messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content


def wait_for_chart_total(page, card, chart: str, expected: int) -> None:
    """Reload the Usage page until the chart shows `expected` (usage reaches the database in batches, every
    half second); fail with what it showed last."""
    figure = card.locator(f"figure[data-chart='{chart}']")
    shown = None
    for _ in range(40):
        figure.wait_for()
        shown = int(figure.get_attribute("data-total"))
        if shown == expected:
            return
        page.wait_for_timeout(250)
        page.get_by_role("button", name="Reload").click()
    raise AssertionError(f"the {chart} chart shows {shown}, not {expected}")


def create_key_in_console(page, name: str) -> str:
    page.get_by_text("Create a key").click()
    form = page.locator("#create-form")
    form.get_by_label("Name").fill(name)
    form.get_by_label("admin").uncheck()
    form.get_by_role("button", name="Create key").click()
    secret = page.locator("#secret-value")
    secret.wait_for()
    return secret.inner_text()


def test_sign_in_keeps_the_key_in_session_storage_only(browser, server: GatewayServer, screenshots: Path) -> None:
    with console_page(browser, server.url) as page:
        shoot(page, screenshots, "sign-in")
        page.get_by_label("Admin key").fill("tkr_not-a-key-of-this-server")
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("alert").filter(has_text="not valid").is_visible()
        sign_in(page)
        assert MASTER_KEY not in page.url
        assert page.evaluate("sessionStorage.getItem('tkr-embed.admin-key')") == MASTER_KEY
        assert page.evaluate("localStorage.length") == 0
        assert page.evaluate("document.cookie") == ""
        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("heading", name="Sign in").wait_for()
        assert page.evaluate("sessionStorage.length") == 0


def test_a_key_created_in_the_console_works_from_the_sdk_counts_in_usage_and_stops_when_revoked(
    browser, server: GatewayServer, screenshots: Path
) -> None:
    with console_page(browser, server.url) as page:
        sign_in(page)
        secret = create_key_in_console(page, "console-tenant")
        assert secret.startswith(KEY_PREFIX)
        assert page.get_by_role("button", name="Copy").is_visible()
        shoot(page, screenshots, "keys-created")
        row = page.locator("#keys-table tbody tr", has_text="console-tenant")
        assert "generate:chat" in row.inner_text() and "admin" not in row.inner_text()
        # The secret is shown once: gone from the page when dismissed, never in the list.
        page.get_by_role("button", name="I have copied it").click()
        assert secret not in page.content()

        assert ask(server, secret) == "Hello there"

        page.get_by_role("link", name="Usage").click()
        card = page.locator(".usage-card", has_text="console-tenant")
        wait_for_chart_total(page, card, "Requests per day", 1)
        tokens_chart = card.locator("figure[data-chart='Tokens per day']")
        assert int(tokens_chart.get_attribute("data-total")) > 0
        assert card.locator("rect.bar-reasoning").count() == 1  # the fake engine's answer reasons first
        assert card.locator("rect.bar-completion").count() == 1
        shoot(page, screenshots, "usage")

        ask(server, secret)
        ask(server, secret)
        wait_for_chart_total(page, card, "Requests per day", 3)

        page.get_by_role("link", name="Keys").click()
        page.get_by_role("button", name="Revoke console-tenant").click()
        dialog = page.get_by_role("dialog")
        assert "cannot be undone" in dialog.inner_text()
        dialog.get_by_role("button", name="Revoke").click()
        assert row.locator(".key-status").inner_text() == "revoked"
        shoot(page, screenshots, "keys-revoked")

    with pytest.raises(openai.AuthenticationError) as refused:
        ask(server, secret)
    assert refused.value.status_code == 401
