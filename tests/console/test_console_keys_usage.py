"""The console in Debian's Chromium against a live server: sign in, create a key and use it from the openai SDK,
watch the usage chart count it, revoke the key and see its next request refused."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from console_support import console_page, shoot, sign_in
from gateway_support import MASTER_KEY, GatewayServer
from playwright.sync_api import expect

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
        expect(page.locator("#signin-error")).to_have_text("This key is not valid on this server.")
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
        expect(row.locator(".key-status")).to_have_text("revoked")
        shoot(page, screenshots, "keys-revoked")

    with pytest.raises(openai.AuthenticationError) as refused:
        ask(server, secret)
    assert refused.value.status_code == 401


def test_scopes_limits_budget_and_reasoning_policy_edited_in_the_console_are_enforced_and_rotation_keeps_the_key(
    browser, server: GatewayServer, screenshots: Path
) -> None:
    created = server.create_key("policy-tenant")
    old_secret = created["api_key"]
    with console_page(browser, server.url) as page:
        sign_in(page)
        page.get_by_role("button", name="Edit policy-tenant").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("generate:stream").uncheck()
        dialog.get_by_label("Requests / minute").fill("30")
        dialog.locator("#edit-budget-day-total").fill("50")
        dialog.get_by_label("allow high").uncheck()
        dialog.get_by_label("A request above the allowed efforts").select_option("refuse")
        shoot(page, screenshots, "keys-edit")
        dialog.get_by_role("button", name="Save").click()
        expect(dialog).to_be_hidden()

        with server.admin() as admin:
            stored = admin.get(f"/admin/api-keys/{created['id']}").json()
        assert sorted(stored["permissions"]) == ["generate:chat", "generate:text"]
        assert stored["limits"]["requests_per_minute"] == 30
        assert stored["budgets"]["day"]["total"] == 50 and stored["budgets"]["month"]["total"] is None
        assert stored["reasoning"]["allowed_efforts"] == ["low", "medium"]
        assert stored["reasoning"]["above"] == "refuse"

        with pytest.raises(openai.PermissionDeniedError) as refused:
            sdk(server, old_secret).chat.completions.create(
                model="gpt-oss-fake", messages=[{"role": "user", "content": "hi"}], reasoning_effort="high"
            )
        assert refused.value.code == "reasoning_effort_not_allowed"
        ask(server, old_secret)  # 71 tokens: the day's budget of 50 is spent
        with pytest.raises(openai.RateLimitError) as spent:
            ask(server, old_secret)
        assert spent.value.code == "budget_exceeded"

        page.get_by_role("link", name="Usage").click()
        budget = page.locator(".usage-card", has_text="policy-tenant").locator("tr[data-budget='day total']")
        expect(budget).to_contain_text("of 50")
        assert int(budget.locator("meter").get_attribute("value")) == 50  # full: the meter stops at the budget
        shoot(page, screenshots, "usage-budget")

        page.get_by_role("link", name="Keys").click()
        page.get_by_role("button", name="Rotate policy-tenant").click()
        page.get_by_role("dialog").get_by_role("button", name="Rotate").click()
        new_secret = page.locator("#secret-value")
        expect(new_secret).to_contain_text("tkr_")
        rotated = new_secret.inner_text()
        assert rotated != old_secret
        row = page.locator("#keys-table tbody tr", has_text="policy-tenant")
        expect(row).to_contain_text(f"previous {created['key_hint']}")

        page.get_by_role("link", name="Server").click()
        audit = page.locator("#audit-table tbody")
        expect(audit.locator("tr[data-action='key.rotated']")).to_contain_text(created["id"])
        expect(audit.locator("tr[data-action='key.updated']").first).to_contain_text("budgets")
        assert old_secret not in audit.inner_text() and rotated not in audit.inner_text()

    # The same key under both secrets during the grace period; its budget stays spent.
    for secret in (old_secret, rotated):
        assert sdk(server, secret).models.list().data[0].id == "gpt-oss-fake"
        with pytest.raises(openai.RateLimitError):
            ask(server, secret)
