"""Submitting from the web in a real browser: sign in, post a finding (a validation error first,
the Markdown preview), a claim whose metrics come from the chosen plugin, and an experiment whose
fields come from the plugin's JSON Schema (a preset fills them); then the finding page shows them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from registry.findings.models import Claim, Finding
from registry.reproductions.models import Experiment
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR") or ROOT / "var" / "screenshots")
PASSWORD = "submit-browser-password"


def expect(target):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"submit-{name}.png"), full_page=True)


def field_block(page, label: str):
    return page.locator(".field").filter(has=page.get_by_label(label, exact=True))


def test_submit_a_finding_with_a_claim_and_an_experiment(browser_page):
    author = UserFactory()
    author.set_password(PASSWORD)
    author.save()
    page = browser_page
    page.set_viewport_size({"width": 1400, "height": 1000})

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(author.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".site-user__name")).to_have_text(author.username)

    # the finding: a tag that is no slug first (refused beside its field, nothing created)
    page.locator("header").get_by_role("link", name="New finding").click()
    expect(page).to_have_url(re.compile(r"/findings/new/$"))
    page.get_by_label("Title").fill("Weight decay makes a network grok")
    page.get_by_label("Kind").select_option("theory")
    page.get_by_label("Summary").fill("Memorise first, then **generalise** suddenly.")
    expect(page.locator("#summary-preview strong")).to_have_text("generalise")  # server-rendered preview
    page.get_by_label("Tags").fill("grokking, not a slug!")
    page.get_by_label("Expected safety effects").fill("Easier to find the algorithm.")
    page.get_by_role("button", name="Create finding").click()
    expect(field_block(page, "Tags").locator(".field__error")).to_contain_text("slug")
    expect(page.locator(".submit-errors")).to_contain_text("Nothing was saved")
    expect(page.get_by_label("Title")).to_have_value("Weight decay makes a network grok")  # the rest kept
    shot(page, "finding-error")
    assert not Finding.objects.exists()

    page.get_by_label("Tags").fill("grokking, weight-decay")
    page.get_by_role("button", name="Create finding").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Weight decay makes a network grok")
    finding = Finding.objects.get()
    expect(page).to_have_url(re.compile(rf"/findings/{finding.pk}/$"))
    expect(page.locator(".summary strong")).to_have_text("generalise")

    # a claim: the plugin's metrics load into the metric field; an impossible threshold first
    page.locator(".owner-actions").get_by_role("link", name="Add claim").click()
    page.get_by_label("Plugin").select_option("grokking")
    expect(page.get_by_label("Metric").locator("option[value='test_accuracy']")).to_have_count(1)
    page.get_by_label("Plugin").select_option("echo")
    expect(page.get_by_label("Metric").locator("option[value='risk']")).to_have_count(1)
    expect(page.get_by_label("Metric").locator("option[value='test_accuracy']")).to_have_count(0)
    page.get_by_label("Metric").select_option("risk")
    page.get_by_label("Direction").select_option("decrease")
    page.get_by_label("Minimum effect").fill("1.5")
    page.get_by_label("Statement").fill("Risk at least 30% lower.")
    page.get_by_role("button", name="Add claim", exact=True).click()
    expect(field_block(page, "Minimum effect").locator(".field__error")).to_contain_text("impossible")
    assert not Claim.objects.exists()
    page.get_by_label("Minimum effect").fill("0.3")
    page.get_by_role("button", name="Add claim", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/findings/{finding.pk}/"))
    expect(page.locator("tr.claim")).to_have_count(1)
    expect(page.locator("tr.claim")).to_contain_text("Risk at least 30% lower.")

    # an experiment: fields from the plugin's schema, a preset fills them
    page.locator(".owner-actions").get_by_role("link", name="Add experiment").click()
    with page.expect_response(lambda response: "plugin-params" in response.url):
        page.get_by_label("Plugin").select_option("checkerboard")
    # the swap lands after the answer: choosing the preset on the old, detached select would be lost
    expect(page.locator(".htmx-request, .htmx-swapping, .htmx-settling")).to_have_count(0)
    expect(page.get_by_label("Loss")).to_have_value("pooled")  # an enum, its default
    expect(page.get_by_label("Steps", exact=True)).to_have_attribute("max", "100000")
    page.get_by_label("Preset").select_option("tiny")
    expect(page.get_by_label("Steps", exact=True)).to_have_value("15")
    page.get_by_label("Plugin").select_option("echo")
    expect(page.get_by_label("Baseline")).to_have_value("1.0")
    expect(page.locator(".params-fields")).to_contain_text("Value of the safety metric in the baseline arm.")
    page.get_by_label("Baseline").fill("2")
    page.get_by_label("Seeds per reproduction").fill("2")
    page.get_by_label("Queue the first reproduction now").uncheck()
    shot(page, "experiment-form")
    page.get_by_role("button", name="Add experiment").click()
    expect(page.locator(".message--success")).to_contain_text("added")
    experiment = Experiment.objects.get()
    assert experiment.finding_id == finding.pk and experiment.params["baseline"] == 2.0
    assert experiment.default_seeds == 2
    expect(page.locator(".owner-actions")).to_contain_text(f"Retract experiment #{experiment.pk}")
    shot(page, "finding")
