"""Browser tests: Debian's Chromium driven by Playwright against pytest-django's live server.

Chromium missing (or the playwright package) skips these tests locally and fails them under CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _missing

try:  # htmx swaps on a loaded CI machine (2 cores, a worker and a live server beside the browser)
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)
except ImportError:  # pragma: no cover - the fixtures below say what is missing
    pass

# Playwright's sync API keeps an event loop in the main thread; the ORM calls the tests make
# between browser steps are still synchronous, so Django's async-safety check must stand aside.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium() -> Iterator:
    if not CHROMIUM.exists():
        _missing(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium, live_server) -> Iterator:
    """A fresh page (own cookies) whose relative URLs go to the live server."""
    context = chromium.new_context(base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


#: Where the browser tests leave their screenshots (CI keeps SCREENSHOT_DIR as an artifact).
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR") or Path(__file__).resolve().parents[2] / "var" / "screenshots")


def screenshot(page, name: str) -> None:
    """A full-page screenshot ``<name>.png`` in SCREENSHOTS."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page, username: str, password: str) -> None:
    """Sign in through the sign-in page as a person would; returns once the page names the user."""
    from playwright.sync_api import expect

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".site-user__name")).to_have_text(username)
