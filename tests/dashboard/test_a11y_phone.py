"""Phones and accessibility (issue 13, part 8), in Debian's Chromium against the live server: every
dashboard page (list, finding, run, landscape, plugins, workers, compare; sign-in, sign-up, password
reset and resend confirmation signed out; profile with a token, invitations, and the forms for a
new or edited finding, a new claim, a new experiment and a retraction signed in) at 1400x1000 and
390x844 has no serious or critical axe-core violation (axe from tests/dashboard/vendor, injected by the
test: the registry never serves it), no sideways scrolling of the page at 390 px, tables that keep
their labels (cards with data-label, or a sideways-scrolling table with its first column pinned),
filters collapsed behind a disclosure on phones, and a landscape chart legible at phone width. A
screenshot of every page at both sizes goes to $SCREENSHOT_DIR (default var/screenshots/)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from registry.findings.models import Finding
from registry.reproductions.models import RunSeries
from tests.conftest import _missing
from tests.dashboard import builders as b
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR") or ROOT / "var" / "screenshots")
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
VIEWPORTS = {"desktop": {"width": 1400, "height": 1000}, "phone": {"width": 390, "height": 844}}

AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations
    .filter(v => v.impact === "serious" || v.impact === "critical")
    .map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + " :: " + n.failureSummary)}));
}"""

# Every table at phone width: a card table's cells each show their label; another table scrolls
# inside itself (never the page) with its first column pinned.
TABLES = """() => Array.from(document.querySelectorAll("main table.table")).filter(t => t.offsetParent !== null)
  .map(t => {
    const cards = t.hasAttribute("data-cards");
    const cells = Array.from(t.querySelectorAll("tbody td"));
    const unlabelled = cards ? cells.filter(td => {
      const before = getComputedStyle(td, "::before").content;
      return !td.hasAttribute("colspan") && (!td.dataset.label || before === "none" || before === "normal");
    }).length : 0;
    const first = t.querySelector("tbody tr > :first-child");
    const box = t.closest(".table-scroll") || t;  // the table scrolls itself or in its wrapper
    return {cls: t.className, cards, unlabelled,
            headerHidden: cards ? t.querySelector("thead").getBoundingClientRect().height <= 1 : null,
            sticky: !cards && first ? getComputedStyle(first).position : null,
            scrolls: !cards ? getComputedStyle(box).overflowX : null,
            focusable: box.scrollWidth > box.clientWidth + 1 ? box.tabIndex >= 0 : true};
  })"""


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"dashboard-{name}.png"), full_page=True)


@pytest.fixture
def site(db, settings):
    """An author (staff, with an API token) with a measured finding (claims, two reproductions on
    different hardware, a PNG artifact), a restricted one, and enough findings for the landscape's
    trend; sign-up open, so its page is the form."""
    from registry.accounts.services import token_create

    settings.SIGNUP_MODE = "open"
    author = UserFactory(is_staff=True)  # staff: the invitations page
    token_create(user=author, name="laptop", expires_in_days=30)  # the profile's tokens table
    fix = b.finding(
        author, title="Resize-convolution removes checkerboards", tags=["vision"],
        summary="Use **resize** then convolve.", xrisk_sheet={"expected_safety_effects": "Fewer artifacts."},
    )
    experiment = b.echo_experiment(fix, author)
    b.claim(fix, author, "risk", "decrease", min_relative_effect=0.3, statement="Risk at least 30% lower.")
    b.claim(fix, author, "skill", "non_inferior", margin=0.05)
    first = b.measured(experiment, recompute=False)
    second = b.measured(experiment, hardware="NVIDIA H100")
    b.stored_png(first.runs.first())
    for run in [*first.runs.all(), *second.runs.all()]:  # curves: the finding's per seed, the run's per arm
        for arm, scale in (("baseline", 1.0), ("intervention", 0.7)):
            RunSeries.objects.create(run=run, arm=arm, name="train_loss", steps=[0, 50, 100], logged=3,
                                     values=[scale, scale * (0.5 + 0.05 * run.seed), scale * (0.2 + 0.05 * run.seed)])
    wobble = [1.0, 1.03, 0.97, 1.01, 0.99]
    for i, (s, c) in enumerate([(1.2, 2.5), (4.0, 1.5), (1.0, 4.0), (8.0, 1.1), (1.5, 1.8)]):
        other = b.finding(author, title=f"Landscape finding {i} with a long title", kind=Finding.Kind.OBSERVATION)
        risk = [(1.0 + 0.1 * k, (1.0 + 0.1 * k) / s * wobble[k]) for k in range(5)]
        skill = [(1.0, c * wobble[(k + 2) % 5]) for k in range(5)]
        b.measured(b.echo_experiment(other, author), {"risk": risk, "skill": skill})
    b.finding(author, title="Restricted trick", visibility=Finding.Visibility.RESTRICTED)
    run = first.runs.order_by("id").first()
    return {
        "author": author,
        "pages": {
            "list": "/",
            "finding": f"/findings/{fix.pk}/",
            "run": f"/runs/{run.pk}/",
            "landscape": "/landscape/",
            "plugins": "/plugins/",
            "compare": f"/findings/{fix.pk}/compare/?reproduction={first.pk}&reproduction={second.pk}",
            "workers": "/workers/",
            "login": "/accounts/login/",
            "signup": "/accounts/signup/",
            "password-reset": "/accounts/password/reset/",
            "resend-confirmation": "/accounts/confirm/resend/",
            "profile": "/accounts/profile/",
            "invitations": "/accounts/invitations/",
            "new-finding": "/findings/new/",
            "edit-finding": f"/findings/{fix.pk}/edit/",
            "new-claim": f"/findings/{fix.pk}/claims/new/",
            "new-experiment": f"/findings/{fix.pk}/experiments/new/",
            "retract": f"/experiments/{experiment.pk}/retract/",
        },
    }


# Pages read by one kind of reader only: the others are sent on (a signed-in reader from the
# sign-in and sign-up pages, a visitor to the sign-in page from the author's pages).
ONLY = {
    **dict.fromkeys(("login", "signup", "password-reset", "resend-confirmation"), "anonymous"),
    **dict.fromkeys(("profile", "invitations", "new-finding", "edit-finding", "new-claim", "new-experiment",
                     "retract"), "author"),
}


def in_browser(fn: Callable[[Any], Any]) -> Any:
    """``fn(browser)`` with a Chromium of its own, on a thread of its own: Playwright's sync API
    refuses to start where another one runs (the browser tests' session-wide one, tests/e2e), and
    a thread has no event loop. No ORM in ``fn``: the data is made (and committed) beforehand."""
    if not CHROMIUM.exists():
        _missing(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package")
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                try:
                    outcome["value"] = fn(browser)
                finally:
                    browser.close()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="a11y-browser")
    thread.start()
    thread.join(timeout=600)
    if "error" in outcome:
        raise outcome["error"]
    assert not thread.is_alive(), "the browser thread did not finish"
    return outcome.get("value")


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def _context(browser, base_url: str, viewport: dict, session: str | None = None):
    # axe is injected by the test, so the page's Content-Security-Policy must let it run
    context = browser.new_context(base_url=base_url, viewport=viewport, bypass_csp=True)
    if session is not None:
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": base_url}])
    return context


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_every_page_passes_axe_and_reads_on_a_phone(live_server, site, size):
    session = _session_cookie(site["author"])

    def check(browser) -> list[str]:
        problems: list[str] = []
        for who in ("anonymous", "author"):
            context = _context(browser, live_server.url, VIEWPORTS[size], session if who == "author" else None)
            page = context.new_page()
            page.set_default_timeout(15_000)
            for name, url in site["pages"].items():
                if ONLY.get(name, who) != who:
                    continue
                response = page.goto(url)
                assert response is not None and response.status == 200, (who, url)
                page.wait_for_load_state("networkidle")
                page.add_script_tag(path=str(AXE))
                for violation in page.evaluate(AXE_RUN):
                    problems.append(f"{size} {who} {name}: {violation['impact']} {violation['id']} "
                                    f"({violation['help']}) {violation['nodes']}")
                if who == "author" or ONLY.get(name) == "anonymous":
                    _shot(page, f"{name}-{size}")
                if size == "phone":
                    problems += _phone_problems(page, f"{who} {name}")
            context.close()
        return problems

    problems = in_browser(check)
    assert problems == [], "\n".join(problems)


def _phone_problems(page, where: str) -> list[str]:
    problems = []
    width = page.evaluate("document.documentElement.scrollWidth")
    if width > VIEWPORTS["phone"]["width"] + 1:
        problems.append(f"phone {where}: the page scrolls sideways ({width} px wide)")
    for table in page.evaluate(TABLES):
        if table["cards"] and (table["unlabelled"] or not table["headerHidden"]):
            problems.append(f"phone {where}: card table {table['cls']} has unlabelled cells")
        if not table["cards"] and (table["sticky"] != "sticky" or table["scrolls"] not in ("auto", "scroll")):
            problems.append(f"phone {where}: table {table['cls']} neither cards nor pinned-and-scrolling")
        if not table["focusable"]:
            problems.append(f"phone {where}: scrolling table {table['cls']} cannot be reached by keyboard")
    return problems


def test_filters_collapse_on_a_phone_and_open_on_a_desktop(live_server, site):
    def check(browser) -> None:
        for size, expected_open in (("desktop", True), ("phone", False)):
            context = _context(browser, live_server.url, VIEWPORTS[size])
            page = context.new_page()
            for url in ("/", "/landscape/"):
                page.goto(url)
                page.wait_for_load_state("networkidle")
                details = page.locator("details.filters-disclosure").first
                assert details.evaluate("el => el.open") is expected_open, (size, url)
                if not expected_open:  # one tap away, and the first screen is not all filters
                    assert page.locator("form.filters").first.is_hidden()
                    page.locator("summary.filters-disclosure__summary").first.click()
                    assert page.locator("form.filters").first.is_visible()
            context.close()

    in_browser(check)


def test_the_landscape_chart_stays_legible_at_phone_width(live_server, site):
    def check(browser) -> None:
        context = _context(browser, live_server.url, VIEWPORTS["phone"])
        page = context.new_page()
        page.goto("/landscape/")
        page.wait_for_load_state("networkidle")
        wide, narrow = page.locator(".scatter--wide svg"), page.locator(".scatter--narrow svg")
        assert wide.is_hidden() and narrow.is_visible()
        box = narrow.bounding_box()
        assert box is not None and box["width"] >= 330
        # text drawn at least 9 px tall on screen (the wide chart shrunk to 360 px: about 5.5 px)
        heights = narrow.locator("text.chart__tick-label").evaluate_all(
            "els => els.map(e => e.getBoundingClientRect().height)")
        assert heights and min(heights) >= 9, heights
        points = narrow.locator("a.chart__point")
        assert points.count() == 6
        href = points.first.get_attribute("href")
        points.first.locator("circle").click()
        page.wait_for_url(f"**{href}")
        context.close()

    in_browser(check)
