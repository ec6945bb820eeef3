"""The whole loop in a real browser against a live server and the session's real Celery worker
(issue 13): sign in, create a finding, a claim on the echo plugin's ``risk`` and an echo
experiment through the web forms, queue a reproduction from the finding page's "Queue runs" form;
then, without a reload, the runs section shows the worker running the runs and finishing them, and
the claims and effects update by themselves (live evidence polling) to a verdict. On a desktop and
on a phone."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import pytest

from registry.findings.models import Claim, Finding
from registry.reproductions.models import Experiment, Reproduction, Run
from tests.conftest import WorkerProcess
from tests.e2e.conftest import screenshot, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),  # the live server and the worker see the test's rows
]

PASSWORD = "worker-flow-password"
VIEWPORTS = {"desktop": {"width": 1400, "height": 1000}, "phone": {"width": 390, "height": 844}}
SEEDS = 3  # the registry's minimum for a verdict
# The worker runs it for real; 3 s of work per run (progress reported as it goes) leaves the page's
# 2 s polling time to catch a run in progress; the noise gives the seeds a spread (a deterministic
# effect needs more seeds than 3 for a verdict).
SLEEP_S = 3
RUN_TIMEOUT_MS = 60_000  # three runs on two worker processes, on a loaded machine


def expect(target):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


@contextlib.contextmanager
def _explained(reproduction: Reproduction, worker: WorkerProcess) -> Iterator[None]:
    """A wait that fails says where the runs and the effects stood, and what the worker logged."""
    try:
        yield
    except AssertionError as error:
        from registry.effects.models import FindingEffects

        finding = reproduction.experiment.finding
        finding.refresh_from_db()
        runs = list(Run.objects.filter(reproduction=reproduction).values_list("pk", "state", "progress"))
        effects = FindingEffects.objects.filter(finding=finding).values("pending", "requested_seq").first()
        raise AssertionError(
            f"{error}\nruns {runs}; status {finding.status}; effects {effects}\n"
            f"worker log:\n{worker.output()[-3000:]}"
        ) from error


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_queue_runs_then_watch_the_worker_reach_a_verdict(browser_page, celery_worker, django_user_model, size):
    page = browser_page
    page.set_viewport_size(VIEWPORTS[size])
    author = django_user_model.objects.create_user(username=f"flow-{size}", password=PASSWORD)

    sign_in(page, author.username, PASSWORD)

    # the finding
    page.goto("/findings/new/")
    page.get_by_label("Title").fill("Echo halves the risk")
    page.get_by_label("Kind").select_option("fix")
    page.get_by_label("Summary").fill("The echo intervention halves the risk, skill unchanged.")
    page.get_by_role("button", name="Create finding").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Echo halves the risk")
    finding = Finding.objects.get(title="Echo halves the risk")
    expect(page).to_have_url(re.compile(rf"/findings/{finding.pk}/$"))

    # a claim on the echo plugin's metric
    page.locator(".owner-actions").get_by_role("link", name="Add claim").click()
    page.get_by_label("Plugin").select_option("echo")
    expect(page.get_by_label("Metric").locator("option[value='risk']")).to_have_count(1)
    page.get_by_label("Metric").select_option("risk")
    page.get_by_label("Direction").select_option("decrease")
    page.get_by_label("Minimum effect").fill("0.3")
    page.get_by_label("Statement").fill("Risk at least 30% lower.")
    page.get_by_role("button", name="Add claim", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/findings/{finding.pk}/"))
    expect(page.locator("tr.claim")).to_have_count(1)
    claim = Claim.objects.get(finding=finding)

    # an echo experiment, its first reproduction not queued with it
    page.locator(".owner-actions").get_by_role("link", name="Add experiment").click()
    with page.expect_response(lambda response: "plugin-params" in response.url):
        page.get_by_label("Plugin").select_option("echo")
    expect(page.locator(".htmx-request, .htmx-swapping, .htmx-settling")).to_have_count(0)
    expect(page.get_by_label("Baseline")).to_have_value("1.0")
    page.get_by_label("Noise").fill("0.1")
    page.get_by_label("Sleep s").fill(str(SLEEP_S))
    page.get_by_label("Seeds per reproduction").fill(str(SEEDS))
    page.get_by_label("Queue the first reproduction now").uncheck()
    page.get_by_role("button", name="Add experiment").click()
    expect(page.locator(".message--success")).to_contain_text("added")
    experiment = Experiment.objects.get(finding=finding)
    assert experiment.plugin == "echo" and experiment.params["sleep_s"] == SLEEP_S
    assert not Reproduction.objects.filter(experiment=experiment).exists()

    # queue the reproduction as a reader of the finding page would
    page.goto(f"/findings/{finding.pk}/")
    verdict = page.locator(f'tr.claim[data-claim="{claim.pk}"] .badge')
    expect(verdict).to_have_text("no data yet")
    request = page.locator("section.card").filter(has=page.get_by_role("heading", name="Request reproduction"))
    request.get_by_label("Experiment").select_option(str(experiment.pk))
    request.get_by_label("Number of seeds").fill(str(SEEDS))
    request.get_by_role("button", name="Queue runs").click()
    expect(page).to_have_url(re.compile(rf"/findings/{finding.pk}/"))
    reproduction = Reproduction.objects.get(experiment=experiment)
    assert sorted(reproduction.runs.values_list("seed", flat=True)) == list(range(SEEDS))

    # from here on the page is not reloaded: the worker runs the runs, the page polls
    page.evaluate("window.__notReloaded = true")
    with _explained(reproduction, celery_worker):
        runs = page.locator(f'#reproduction-{reproduction.pk} tr[data-run-id]')
        expect(runs).to_have_count(SEEDS)
        expect(page.locator("#evidence")).to_have_attribute("data-live", "on")  # runs queued: it polls
        expect(verdict).to_have_text("awaiting data")  # the first run takes SLEEP_S seconds at least
        # the worker picks a run up: the runs section shows it running, with progress reported
        running = page.locator(f'#reproduction-{reproduction.pk} tr[data-state="running"]').first
        expect(running).to_be_visible(timeout=RUN_TIMEOUT_MS)
        expect(running.locator(".badge")).to_have_text("running")
        # ... and every run finishes
        expect(page.locator(f'#reproduction-{reproduction.pk} tr[data-state="succeeded"]')).to_have_count(
            SEEDS, timeout=RUN_TIMEOUT_MS
        )
        expect(runs.locator(".badge")).to_have_text(["succeeded"] * SEEDS)
        for i in range(SEEDS):
            expect(runs.nth(i).locator('[role="progressbar"]')).to_have_attribute("aria-valuenow", "100")
        expect(page.locator("#runs")).to_have_attribute("data-polling", "off")
        # the recompute (maintenance queue) lands in the evidence by itself: the verdict, the status
        expect(verdict).to_have_text("confirmed", timeout=RUN_TIMEOUT_MS)
        expect(page.locator(f'tr.claim[data-claim="{claim.pk}"] td').nth(3)).to_have_text(str(SEEDS))  # n
        expect(page.locator("#finding-badges .badge").first).to_have_text("reproduced")
        expect(page.locator(f"#effects-experiment-{experiment.pk}")).to_contain_text(f"{SEEDS} seeds")
        expect(page.locator(".axis-score--safety")).to_contain_text("better")
        expect(page.locator("#evidence")).to_have_attribute("data-live", "off")
    assert page.evaluate("window.__notReloaded") is True, "the page was reloaded"
    if size == "phone":
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= VIEWPORTS["phone"]["width"] + 1, f"the finding page scrolls sideways ({width} px wide)"
    screenshot(page, f"worker-flow-{size}")

    # what the page shows is what the worker wrote
    states = set(Run.objects.filter(reproduction=reproduction).values_list("state", flat=True))
    assert states == {Run.State.SUCCEEDED}, celery_worker.output()[-3000:]
