"""The dashboard in a real browser: sign in, read a finding, the landscape, live progress, offline."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from registry.effects.models import FindingEffects
from registry.findings.models import Finding
from registry.findings.services import experiment_retract
from registry.reproductions.models import Run
from tests.dashboard import builders as b
from tests.e2e.conftest import screenshot
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-test-password"


def expect(target):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


@pytest.fixture
def author():
    user = UserFactory()
    user.set_password(PASSWORD)
    user.save()
    return user


@pytest.fixture
def two_measured_findings(author):
    """A safety-leaning fix with claims, and a capability-leaning one."""
    fix = b.finding(
        author,
        title="Resize-convolution removes checkerboards",
        summary="Use **resize** then convolve instead of a transposed convolution.",
        tags=["vision"],
        xrisk_sheet={"expected_safety_effects": "Fewer hidden artifacts."},
    )
    experiment = b.echo_experiment(fix, author)
    b.claim(fix, author, "risk", "decrease", min_relative_effect=0.3, statement="Risk at least 30% lower.")
    b.claim(fix, author, "skill", "non_inferior", margin=0.05)
    reproduction = b.measured(experiment)
    b.stored_png(reproduction.runs.first())
    scaling = b.finding(author, title="A scaling trick", kind=Finding.Kind.OBSERVATION, tags=["lm"])
    b.measured(b.echo_experiment(scaling, author), {"risk": b.RISK_UP, "skill": b.SKILL_UP})
    return fix, scaling


def test_sign_in_read_a_finding_and_reach_the_landscape(browser_page, author, two_measured_findings):
    page = browser_page
    fix, scaling = two_measured_findings

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(author.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".site-user__name")).to_have_text(author.username)

    page.get_by_role("link", name=fix.title).click()
    expect(page).to_have_url(re.compile(rf"/findings/{fix.pk}/$"))
    expect(page.locator(".summary strong")).to_have_text("resize")
    claims = page.locator("tr.claim")
    expect(claims).to_have_count(2)
    expect(claims.first).to_contain_text("Risk at least 30% lower.")
    expect(page.locator("tr.claim .badge--verdict-confirmed")).to_have_count(2)
    expect(claims.first.locator("svg.chart--interval")).to_be_visible()
    expect(claims.first).to_contain_text("decreases by at least 30%")
    expect(claims.first).to_contain_text("relative change")
    expect(page.locator(".axis-score--safety")).to_contain_text("log units")
    expect(page.locator(".axis-score--safety .axis-score__factor")).to_contain_text("better")
    expect(page.locator(f"#effects-experiment-{fix.experiments.get().pk}")).to_contain_text("echo")
    expect(page.locator("aside.statement")).to_contain_text("Not measured")
    expect(page.get_by_role("heading", name="Request reproduction")).to_be_visible()
    image = page.locator("img[alt^='samples.png']")
    image.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert image.evaluate("img => img.naturalWidth") == 8  # the PNG artifact, served by the registry

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Landscape").click()
    expect(page).to_have_url(re.compile(r"/landscape/$"))
    points = page.locator("svg.chart--scatter a[data-finding]")
    expect(points).to_have_count(2)
    assert sorted(points.evaluate_all("els => els.map(e => +e.dataset.finding)")) == sorted([fix.pk, scaling.pk])
    expect(page.locator(".lean-count--safety-leaning .lean-count__n")).to_have_text("1")
    expect(page.locator(".lean-count--capability-leaning .lean-count__n")).to_have_text("1")
    expect(page.locator("svg.chart--scatter .chart__axis-label").first).to_contain_text("log units")
    expect(page.locator(".correlation__withheld")).to_contain_text("withheld")  # two findings only
    expect(page.locator(".progress__withheld")).to_be_visible()

    page.locator(f"svg.chart--scatter a[data-finding='{scaling.pk}'] circle").click()
    expect(page).to_have_url(re.compile(rf"/findings/{scaling.pk}/$"))


def test_progress_bars_update_live_and_polling_stops(browser_page, author):
    page = browser_page
    finding = b.finding(author, title="Live progress")
    reproduction = b.queued(b.echo_experiment(finding, author), 2)
    first, second = reproduction.runs.order_by("id")
    fragment = f"/findings/{finding.pk}/runs/"
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if request.url.endswith(fragment) else None)

    page.goto(f"/findings/{finding.pk}/")
    bar = page.locator(f'tr[data-run-id="{first.pk}"] [role="progressbar"]')
    expect(bar).to_have_attribute("aria-valuenow", "0")
    expect(page.locator("#runs")).to_have_attribute("data-polling", "on")
    page.evaluate("window.__notReloaded = true")
    page.locator("details.params summary").click()  # a reader's open disclosure survives the polling

    Run.objects.filter(pk=first.pk).update(progress=0.5, state=Run.State.RUNNING, progress_message="halfway")
    expect(bar).to_have_attribute("aria-valuenow", "50")
    expect(page.locator(f'tr[data-run-id="{first.pk}"]')).to_contain_text("halfway")
    assert page.evaluate("window.__notReloaded") is True
    width = bar.locator(".progress__fill").evaluate("el => el.style.width")
    assert width == "50%"
    expect(page.locator("details.params")).to_have_attribute("open", "")

    Run.objects.filter(pk__in=[first.pk, second.pk]).update(state=Run.State.SUCCEEDED, progress=1.0)
    expect(page.locator("#runs")).to_have_attribute("data-polling", "off")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    assert page.locator("#runs").get_attribute("hx-trigger") is None
    seen = len(polls)
    assert seen >= 2
    page.wait_for_timeout(4500)  # more than two polling periods
    assert len(polls) == seen, "the page kept polling after every run finished"
    assert page.evaluate("window.__notReloaded") is True


def test_pages_work_with_the_network_blocked(browser_page, live_server, author, two_measured_findings):
    page = browser_page
    fix, _ = two_measured_findings
    run = Run.objects.filter(reproduction__experiment__finding=fix).first()
    own_host = urlsplit(live_server.url).netloc
    aborted: list[str] = []
    failed: list[str] = []

    def only_the_registry(route) -> None:
        if urlsplit(route.request.url).netloc == own_host:
            route.continue_()
        else:
            aborted.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_registry)
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    page.on("requestfailed", lambda request: failed.append(request.url))

    for url in ["/", f"/findings/{fix.pk}/", "/landscape/", "/plugins/", f"/runs/{run.pk}/", "/accounts/login/"]:
        page.goto(url)
        page.wait_for_load_state("networkidle")
        assert page.evaluate("typeof window.htmx") == "object", url
        header = page.evaluate("getComputedStyle(document.querySelector('.site-header')).backgroundColor")
        assert header == "rgb(31, 78, 121)", url  # the local stylesheet applied

    assert aborted == []
    assert failed == []


@contextlib.contextmanager
def _recompute_lock_held(finding_id: int) -> Iterator[None]:
    import psycopg
    from django.db import connection

    from registry.effects.services import RECOMPUTE_LOCK_CLASS

    params = {k: v for k, v in connection.get_connection_params().items() if k not in ("cursor_factory", "context")}
    with psycopg.connect(**params) as holder:  # a transaction of its own: the lock lasts until it ends
        holder.execute("SELECT pg_advisory_xact_lock(%s, %s)", [RECOMPUTE_LOCK_CLASS, finding_id & 0x7FFFFFFF])
        yield
        holder.rollback()


def test_an_anonymous_reader_sees_recompute_state_status_and_a_retraction(browser_page, author):
    page = browser_page
    finding = b.finding(author, title="Partly there")
    kept = b.echo_experiment(finding, author)
    smoke = b.echo_experiment(finding, author, params={"effect": -0.1})
    b.claim(finding, author, "risk", "decrease", min_relative_effect=0.3)
    b.claim(finding, author, "skill", "increase", min_relative_effect=0.005)  # flat: undecided
    b.measured(kept)
    experiment_retract(experiment=smoke, user=author, reason="smoke test only")
    b.recompute(finding)
    # A recompute in progress, for real: the session's worker (started by earlier tests) may still
    # hold this finding's queued recompute; it waits on the recompute lock we hold here, so the page
    # (which polls the evidence while a recompute is pending) keeps showing it until we let go.
    with _recompute_lock_held(finding.pk):
        FindingEffects.objects.filter(finding=finding).update(pending=True)
        page.goto(f"/findings/{finding.pk}/")
        expect(page.locator(".site-user")).to_contain_text("Sign in")  # not signed in
        expect(page.locator(".recompute-pending")).to_be_visible()
        expect(page.locator(".recompute-pending")).to_contain_text("being recomputed")
    badge = page.locator(".finding__kicker .badge--status-partially-reproduced")
    expect(badge).to_have_text("partially reproduced")
    retracted = page.locator(f"#effects-experiment-{smoke.pk}")
    expect(retracted.locator(".badge--retracted")).to_be_visible()
    expect(retracted.locator(".retraction__reason")).to_have_text("smoke test only")
    name = retracted.locator(".effects-experiment__name")
    decoration = name.evaluate("el => getComputedStyle(el).textDecorationLine")
    assert decoration == "line-through"
    expect(page.locator("tr.claim .badge--verdict-confirmed")).to_have_count(1)
    screenshot(page, "dashboard-browser-finding")
