"""The Server and Playground pages in Debian's Chromium, and the console on a phone, in dark mode and by keyboard."""

from __future__ import annotations

import json
from pathlib import Path

import openai
from console_support import PHONE, console_page, shoot, sign_in
from gateway_support import MASTER_KEY, SECRET_KEY, GatewayServer
from playwright.sync_api import expect

from tkr_embed.harmony.tokenizer import get_tokenizer

WEATHER_TOOL = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
TOOL_CALL = (
    "<|channel|>analysis<|message|>need weather<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather"
    ' <|constrain|>json<|message|>{"city": "Paris"}<|call|>'
)


def test_the_server_page_shows_the_engine_the_model_the_redacted_config_and_the_audit_log(
    browser, server: GatewayServer, screenshots: Path
) -> None:
    with console_page(browser, server.url) as page:
        sign_in(page)
        page.get_by_role("link", name="Server").click()
        expect(page.locator("#engine-running")).to_have_text("0")
        assert page.locator("#engine-waiting").inner_text() == "0"
        # A request held open in the engine shows as running on the next poll, and goes when it ends.
        server.engine.hang_after = 1
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=MASTER_KEY, max_retries=0)
        stream = client.chat.completions.create(
            model="gpt-oss-fake", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        try:
            next(iter(stream))
            expect(page.locator("#engine-running")).to_have_text("1")
        finally:
            stream.close()
            server.engine.hang_after = None
        expect(page.locator("#engine-running")).to_have_text("0")
        assert page.locator("#model-name").inner_text() == "gpt-oss-fake"
        page.get_by_role("button", name="Show the configuration").click()
        config = page.locator("#config-view")
        config.wait_for()
        shown = json.loads(config.inner_text())
        assert shown["security"]["api_key"] == "[REDACTED]"
        assert MASTER_KEY not in config.inner_text() and SECRET_KEY not in config.inner_text()
        # Reading the configuration is an admin action of its own in the audit log.
        page.locator("#audit-table tbody tr[data-action='config.viewed']").first.wait_for()
        shoot(page, screenshots, "server")


def test_the_playground_streams_the_answer_with_the_reasoning_apart(
    browser, server: GatewayServer, screenshots: Path
) -> None:
    with console_page(browser, server.url) as page:
        sign_in(page)
        page.get_by_role("link", name="Playground").click()
        page.get_by_label("Reasoning effort", exact=True).select_option("low")
        page.get_by_label("Message", exact=True).fill("Say hello")
        page.get_by_role("button", name="Send").click()
        reply = page.locator(".turn.assistant").last
        reply.locator(".answer-text").filter(has_text="Hello there").wait_for()
        assert reply.locator(".answer-text").inner_text() == "Hello there"
        reasoning = reply.locator("details.reasoning")
        assert reasoning.locator(".reasoning-text").text_content() == "think think"
        assert not reasoning.locator(".reasoning-text").is_visible()
        assert reasoning.get_attribute("open") is None  # collapsed until opened
        reasoning.locator("summary").click()
        assert reasoning.locator(".reasoning-text").is_visible()
        assert reasoning.locator(".reasoning-text").inner_text() == "think think"
        expect(reply.locator(".meta")).to_contain_text("completion")
        # The engine got the effort chosen, rendered into the harmony system message.
        assert "Reasoning: low" in server.engine.decode(server.engine.submitted[-1].prompt_token_ids)
        curl = page.locator("#code-curl").inner_text()
        assert '"reasoning_effort": "low"' in curl and "$TKR_API_KEY" in curl and MASTER_KEY not in curl
        python = page.locator("#code-python").inner_text()
        assert 'reasoning_effort="low"' in python and '"content": "Say hello"' in python
        shoot(page, screenshots, "playground")


def test_the_playground_runs_with_a_pasted_key_and_shows_its_effort_stepped_down(
    browser, server: GatewayServer
) -> None:
    limited = server.create_key("low-only", reasoning={"allowed_efforts": ["low"], "above": "step_down"})
    with console_page(browser, server.url) as page:
        sign_in(page)
        page.get_by_role("link", name="Playground").click()
        page.get_by_label("API key for the request").fill(limited["api_key"])
        page.get_by_label("Reasoning effort", exact=True).select_option("high")
        page.get_by_label("Message", exact=True).fill("Say hello")
        page.get_by_role("button", name="Send").click()
        reply = page.locator(".turn.assistant").last
        expect(reply.locator(".meta")).to_contain_text("effort stepped down to low")
        assert "Reasoning: low" in server.engine.decode(server.engine.submitted[-1].prompt_token_ids)
        assert limited["api_key"] not in page.locator("#code-curl").inner_text()


def test_the_playground_shows_the_tool_calls_made(browser, server: GatewayServer, screenshots: Path) -> None:
    # The fake engine answers with a tool call for this test only.
    tool_call = get_tokenizer().encoding.encode(TOOL_CALL, allowed_special="all")
    answer = server.engine.script
    server.engine.script = lambda prompt, params: tool_call
    try:
        with console_page(browser, server.url) as page:
            sign_in(page)
            page.get_by_role("link", name="Playground").click()
            page.get_by_label("Tools (JSON array of function definitions, optional)").fill("[not json")
            assert "not valid JSON" in page.locator("#chat-tools-error").inner_text()
            page.get_by_label("Tools (JSON array of function definitions, optional)").fill(json.dumps(WEATHER_TOOL))
            page.get_by_label("Message", exact=True).fill("Weather in Paris?")
            page.get_by_role("button", name="Send").click()
            call = page.locator(".turn.assistant .tool-call").first
            expect(call).to_have_text('get_weather({"city": "Paris"})')
            assert "get_weather" in page.locator("#code-python").inner_text()
            shoot(page, screenshots, "playground-tools")
    finally:
        server.engine.script = answer


def test_on_a_phone_nothing_is_wider_than_the_screen(browser, server: GatewayServer, screenshots: Path) -> None:
    with console_page(browser, server.url, viewport=PHONE, is_mobile=True, has_touch=True) as page:
        sign_in(page)
        for name in ("Keys", "Usage", "Server", "Playground"):
            page.get_by_role("link", name=name).click()
            page.get_by_role("heading", level=1).filter(visible=True).first.wait_for()
            page.wait_for_timeout(200)
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{name} is {overflow}px wider than the phone's screen"
            shoot(page, screenshots, f"phone-{name.lower()}")


def test_dark_mode_follows_the_browser(browser, server: GatewayServer, screenshots: Path) -> None:
    server.create_key("dark-mode-tenant")
    with console_page(browser, server.url, color_scheme="dark") as page:
        sign_in(page)
        page.locator("#keys-table tbody tr", has_text="dark-mode-tenant").wait_for()
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        text = page.evaluate("getComputedStyle(document.body).color")
        assert luminance(background) < 0.05 < 0.6 < luminance(text), (background, text)
        shoot(page, screenshots, "dark-keys")
    with console_page(browser, server.url, color_scheme="light") as page:
        assert luminance(page.evaluate("getComputedStyle(document.body).backgroundColor")) > 0.8


def test_the_console_works_by_keyboard_alone_with_a_visible_focus(
    browser, server: GatewayServer, screenshots: Path
) -> None:
    with console_page(browser, server.url) as page:
        page.keyboard.press("Tab")  # the skip link comes first
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "signin-key"
        page.keyboard.type(MASTER_KEY)
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="API keys").wait_for()
        # Focus moves to the page's content after each page change: back (Shift+Tab) into the navigation.
        tab_to(page, "Usage", "Shift+Tab")
        focused_outline = page.evaluate("getComputedStyle(document.activeElement).outlineWidth")
        assert focused_outline not in ("", "0px"), focused_outline
        shoot(page, screenshots, "keyboard-focus")
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="Usage").wait_for()
        assert page.locator("#nav a[aria-current='page']").inner_text() == "Usage"
        # Back to Keys, open the create form and make a key, all by keyboard.
        tab_to(page, "Keys", "Shift+Tab")
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="API keys").wait_for()
        tab_to(page, "Create a key", "Tab")
        page.keyboard.press("Enter")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "create-name"
        page.keyboard.type("keyboard-key")
        page.keyboard.press("Enter")
        page.locator("#secret-value").wait_for()
        assert page.evaluate("document.activeElement.id") == "secret-panel"
        row = page.locator("#keys-table tbody tr", has_text="keyboard-key")
        tab_to(page, "Revoke keyboard-key", "Tab")
        page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog")
        assert dialog.is_visible() and "Revoke keyboard-key" in dialog.inner_text()
        page.keyboard.press("Escape")  # a dialog closes with Escape and revokes nothing
        assert not dialog.is_visible()
        assert row.locator(".key-status").inner_text() == "active"


def tab_to(page, text: str, key: str) -> None:
    """Press `key` (Tab or Shift+Tab) until the focused element's accessible name (label or text) is `text`."""
    for _ in range(30):
        page.keyboard.press(key)
        focused = "(document.activeElement.getAttribute('aria-label') || document.activeElement.textContent).trim()"
        if page.evaluate(focused) == text:
            return
    raise AssertionError(f"{key} never reached {text!r}")


def luminance(css_colour: str) -> float:
    """Relative luminance (WCAG) of an `rgb(r, g, b)` colour."""
    channels = [int(part) / 255 for part in css_colour[css_colour.index("(") + 1 : -1].split(",")[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


CONTRAST_SCRIPT = """
(selectors) => {
  const rgb = (css) => css.match(/[\\d.]+/g).map(Number);
  const background = (element) => {
    for (let node = element; node; node = node.parentElement) {
      const colour = rgb(getComputedStyle(node).backgroundColor);
      if (colour.length < 4 || colour[3] > 0) return colour.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const luminance = ([r, g, b]) => {
    const linear = [r, g, b].map((c) => c / 255).map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
  };
  return selectors.map((selector) => {
    const element = document.querySelector(selector);
    const [a, b] = [luminance(rgb(getComputedStyle(element).color).slice(0, 3)), luminance(background(element))];
    return [selector, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
  });
}
"""
# Text of every kind the pages show: body text, muted notes, the current page's link, buttons, errors, code.
CONTRAST_SELECTORS = [
    "h1:not([hidden] *)",
    "#status",
    "#nav a[aria-current='page']",
    "#nav a:not([aria-current])",
    "#sign-out",
    "#keys-reload",
    "#create-key summary",
    "#keys-table th",
    "#keys-table .note",
    "#keys-table .badge.ok",
]


def test_text_has_enough_contrast_in_light_and_dark_mode(browser, server: GatewayServer) -> None:
    server.create_key("contrast-tenant")
    for scheme in ("light", "dark"):
        with console_page(browser, server.url, color_scheme=scheme) as page:
            sign_in(page)
            page.locator("#keys-table tbody tr", has_text="contrast-tenant").wait_for()
            page.locator("#status").evaluate("element => { element.textContent = 'status text'; }")
            ratios = dict(page.evaluate(CONTRAST_SCRIPT, CONTRAST_SELECTORS))
            low = {selector: round(ratio, 2) for selector, ratio in ratios.items() if ratio < 4.5}
            assert low == {}, f"{scheme}: below WCAG AA's 4.5:1: {low}"
