"""GET /console in a real browser: Chromium from the OS packages (`apt-get install
chromium`) driven by Playwright's Python package, against a running gateway with real
traffic through the fake upstream. Playwright's own browser download is never used.

CONSOLE_SCREENSHOT=docs/console.png pytest tests/test_console_browser.py
refreshes the screenshot in the docs."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import ADMIN_KEY, CLIENT_KEY, UPSTREAM_KEY, GatewayProcess, require

STORAGE = "llm-gateway-admin-key"  # console.js keeps the key under this name


def chromium_path() -> str | None:
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require(None if sync_playwright else "playwright is not installed (pip install -e '.[test]')")
    path = chromium_path()
    require(None if path else "chromium is not installed (apt-get install -y chromium)")
    assert sync_playwright is not None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any, gateway: GatewayProcess) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage) on /console; any script error or CSP
    violation fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and "401" not in msg.text and "403" not in msg.text
            else None
        ),
    )
    tab.goto(gateway.url + "/console")
    yield tab
    context.close()
    assert not problems, problems


def sign_in(page: Any, key: str) -> None:
    page.fill("#admin-key", key)
    page.click("#login-button")


def test_console_refuses_without_a_valid_admin_key(page: Any, gateway: GatewayProcess) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#dashboard")).to_be_hidden()
    sign_in(page, "not-an-admin-key")
    expect(page.locator("#login-error")).to_contain_text("Invalid admin key")
    expect(page.locator("#dashboard")).to_be_hidden()
    assert page.evaluate(f"sessionStorage.getItem('{STORAGE}')") is None
    sign_in(page, CLIENT_KEY)  # a client key opens the API, not the console
    expect(page.locator("#login-error")).to_contain_text("needs an admin key")
    expect(page.locator("#dashboard")).to_be_hidden()
    # The data itself is refused to the page without the key, and with a wrong one.
    statuses = page.evaluate(
        """async () => [
            (await fetch('/admin/overview')).status,
            (await fetch('/admin/decisions', {headers: {authorization: 'Bearer wrong'}})).status,
            (await fetch('/admin/config', {headers: {authorization: 'Bearer wrong'}})).status,
        ]"""
    )
    assert statuses == [401, 401, 401]


def test_console_signs_in_and_shows_a_request_just_sent(
    page: Any, gateway: GatewayProcess, workdir: Path
) -> None:
    from playwright.sync_api import expect

    sign_in(page, ADMIN_KEY)
    expect(page.locator("#dashboard")).to_be_visible()
    assert ADMIN_KEY not in page.url and "key" not in page.url
    assert page.evaluate(f"sessionStorage.getItem('{STORAGE}')") == ADMIN_KEY
    expect(page.locator('#providers tr[data-provider="openai"]')).to_contain_text("yes")
    expect(page.locator('#providers tr[data-provider="dead"]')).to_contain_text("no")

    prompt = "BROWSER-FEED-PROMPT-" + uuid.uuid4().hex
    request_id = "browser-" + uuid.uuid4().hex[:12]
    client = openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": prompt}],
        extra_headers={"x-request-id": request_id},
    )
    # A private prompt on `auto` stays local: the feed names its category, not its text.
    private_id = "browser-private-" + uuid.uuid4().hex[:8]
    client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Write to jane.doe@example.com about " + prompt}],
        extra_headers={"x-request-id": private_id},
    )
    client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "the built-in demo model"}]
    )
    private = page.locator(f'#feed tbody tr[data-request-id="{private_id}"]')
    expect(private).to_contain_text("pii", timeout=10_000)
    expect(private).to_contain_text("ollama")
    row = page.locator(f'#feed tbody tr[data-request-id="{request_id}"]')
    expect(row).to_be_visible(timeout=10_000)  # the page refreshes every 2 s
    expect(row).to_contain_text("openai / gpt-4o-mini")
    expect(row).to_contain_text("explicit")
    expect(row).to_contain_text("200")
    expect(page.locator("#routes tbody")).to_contain_text("explicit")
    expect(page.locator("#config")).to_contain_text('"default_model": "gpt-4o-mini"')
    expect(page.locator("#reload")).to_contain_text("No reload since the start")
    text = page.locator("body").inner_text()
    assert prompt not in text and "jane.doe" not in text
    for secret in (UPSTREAM_KEY, CLIENT_KEY, ADMIN_KEY):
        assert secret not in text
    page.screenshot(path=str(workdir / "console.png"), full_page=True)
    if os.environ.get("CONSOLE_SCREENSHOT"):
        page.screenshot(path=os.environ["CONSOLE_SCREENSHOT"], full_page=False)

    page.reload()  # the tab's session keeps the key
    expect(page.locator("#dashboard")).to_be_visible()
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate(f"sessionStorage.getItem('{STORAGE}')") is None


def test_playground_explains_a_private_prompt_as_kept_local(page: Any) -> None:
    from playwright.sync_api import expect

    sign_in(page, ADMIN_KEY)
    expect(page.locator("#dashboard")).to_be_visible()
    request = (
        '{"model": "auto", "messages": [{"role": "user", "content": '
        '"Deploy with AKIAIOSFODNN7EXAMPLE please"}]}'
    )
    page.fill("#explain-input", request)
    page.click("#explain-button")
    decision = page.locator("#explain-decision")
    expect(decision).to_contain_text("Kept local")
    expect(decision).to_contain_text("ollama")
    findings = page.locator("#explain-findings tbody tr")
    expect(findings.first).to_contain_text("aws_access_key")
    expect(findings.first).to_contain_text("secret")
    expect(page.locator("#explain-factors tbody tr").first).to_be_visible()
    expect(page.locator("#explain-score")).to_contain_text("score")
    assert "AKIAIOSFODNN7EXAMPLE" not in page.locator("#explain-result").inner_text()

    page.fill("#explain-input", '{"model": "auto", "messages": "not a list"}')
    page.click("#explain-button")
    expect(page.locator("#explain-error")).to_be_visible()
    expect(page.locator("#explain-decision")).not_to_contain_text("Kept local")
