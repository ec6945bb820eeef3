"""Accounts in a real browser: sign up (a validation error first), confirm from the emailed link,
sign in, create an API token on the profile page (shown once, works against the API), revoke it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.core.cache import cache

from registry.accounts.models import ApiToken
from registry.accounts.signup import email_allowance_key

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR") or ROOT / "var" / "screenshots")
PASSWORD = "a browser-made password"


def expect(target):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"accounts-{name}.png"), full_page=True)


def test_sign_up_confirm_sign_in_and_create_a_token(browser_page, settings, mailoutbox):
    settings.SIGNUP_MODE = "open"
    cache.delete(email_allowance_key("127.0.0.1"))
    page = browser_page
    page.set_viewport_size({"width": 1400, "height": 1000})

    page.goto("/accounts/login/")
    page.get_by_role("link", name="Sign up").click()
    expect(page).to_have_url(re.compile(r"/accounts/signup/$"))
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Email").fill("ada@example.org")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill("not the same")
    page.get_by_role("button", name="Sign up").click()
    error = page.locator(".field--invalid").filter(has=page.get_by_label("Password confirmation"))
    expect(error.locator(".field__error")).to_contain_text("didn’t match")
    expect(page.get_by_label("Username")).to_have_value("ada")  # the rest is kept
    shot(page, "signup-error")
    assert mailoutbox == []

    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    (message,) = mailoutbox
    assert message.to == ["ada@example.org"]
    (link,) = re.findall(r"https?://\S+", message.body)

    page.goto(link)
    expect(page.get_by_role("heading", name="Confirm your email")).to_be_visible()
    shot(page, "confirm")
    page.get_by_role("button", name="Confirm and activate").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    expect(page.locator(".message--success")).to_contain_text("confirmed")

    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".site-user__name")).to_have_text("ada")

    page.get_by_role("link", name="Profile").click()
    expect(page).to_have_url(re.compile(r"/accounts/profile/$"))
    expect(page.get_by_role("heading", name="Your profile")).to_be_visible()
    page.get_by_label("Name").fill("laptop")
    page.get_by_label("Expires").select_option(label="30 days")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#token-secret").inner_text().strip()
    assert secret.startswith("ifr_")
    expect(page.locator("#tokens table")).to_contain_text("laptop")
    shot(page, "profile-token-created")

    api = page.request.get("/api/v1/tokens/", headers={"Authorization": f"Token {secret}"})
    assert api.status == 200 and [t["name"] for t in api.json()] == ["laptop"]

    page.goto("/accounts/profile/")  # shown once: not on the next visit
    expect(page.locator("#token-secret")).to_have_count(0)
    assert secret not in page.content()
    page.get_by_role("button", name="Revoke laptop").click()
    expect(page.locator(".message--success")).to_contain_text("revoked")
    shot(page, "profile-token-revoked")
    assert ApiToken.objects.get(name="laptop").revoked_at is not None
    assert page.request.get("/api/v1/tokens/", headers={"Authorization": f"Token {secret}"}).status == 401
