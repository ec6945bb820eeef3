"""Live evidence in a real browser (issue 13, part 3): the finding page's verdict, status and axis
scores change without a reload when its runs' results land and the recompute runs; meanwhile the
page's polls of the evidence are answered 304 (nothing swapped), and the polling stops once
nothing is queued, running or pending."""

from __future__ import annotations

import pytest

from registry.reproductions.models import Measurement, Run
from tests.dashboard import builders as b
from tests.e2e.conftest import screenshot
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]



def expect(target):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def test_verdict_changes_without_a_reload_when_results_land(browser_page):
    page = browser_page
    author = UserFactory()
    finding = b.finding(author, title="Live verdict")
    experiment = b.echo_experiment(finding, author)
    claim = b.claim(finding, author, "risk", "decrease", min_relative_effect=0.3)
    reproduction = b.queued(experiment, 5)
    b.recompute(finding)  # the claim's recompute has run: nothing pending, runs queued
    polls: list[int] = []
    page.on(
        "response",
        lambda response: polls.append(response.status) if "/evidence/" in response.url else None,
    )

    page.goto(f"/findings/{finding.pk}/")
    verdict = page.locator(f'tr.claim[data-claim="{claim.pk}"] .badge')
    expect(verdict).to_have_text("awaiting data")
    expect(page.locator("#evidence")).to_have_attribute("data-live", "on")
    expect(page.locator("#finding-badges .badge").first).to_have_text("unreproduced")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_timeout(3500)  # more than a polling period with nothing changed
    assert 304 in polls, polls  # the page sent its ETag and the server had nothing new
    expect(verdict).to_have_text("awaiting data")

    # the worker's results land on the queued runs, then the effects recompute runs
    for seed, run in enumerate(reproduction.runs.order_by("id")):
        Measurement.objects.bulk_create(
            [
                Measurement(run=run, arm=arm, metric=metric, value=value)
                for metric, pairs in (("risk", b.RISK_DOWN), ("skill", b.SKILL_FLAT))
                for arm, value in zip(("baseline", "intervention"), pairs[seed], strict=True)
            ]
        )
    Run.objects.filter(reproduction=reproduction).update(state=Run.State.SUCCEEDED, progress=1.0)
    b.recompute(finding)

    expect(verdict).to_have_text("confirmed", timeout=15_000)
    expect(page.locator("#finding-badges .badge").first).to_have_text("reproduced")
    expect(page.locator(".axis-score--safety")).to_contain_text("×2.0 better")
    expect(page.locator("#evidence")).to_have_attribute("data-live", "off")
    assert page.evaluate("window.__notReloaded") is True, "the page was reloaded"
    assert 200 in polls
    # once nothing is queued, running or pending, the evidence stops polling
    seen = len(polls)
    page.wait_for_timeout(4000)
    assert len(polls) == seen, "the evidence kept polling after everything finished"
    screenshot(page, "live-evidence-finding")
