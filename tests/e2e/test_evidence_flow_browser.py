"""From a finding with reproduced runs to its evidence, in a real browser (issue 13), on a desktop
and on a phone: the finding is created through the web form, its runs (two experiments whose
``effect`` parameter differs, on different hardware, with training curves) are attached as a
worker would write them; then the reader sees the curves drawn per arm, ticks two runs and opens
their comparison (the differing parameter marked changed), and downloads the runs as CSV. At
390 px no page scrolls sideways."""

from __future__ import annotations

import csv
import io
import re

import pytest

from registry.dashboard.compare import RUN_COLUMNS
from registry.findings.models import Finding
from registry.reproductions.models import Measurement, Run, RunSeries
from tests.dashboard import builders as b
from tests.e2e.conftest import screenshot, sign_in
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "evidence-flow-password"
VIEWPORTS = {"desktop": {"width": 1400, "height": 1000}, "phone": {"width": 390, "height": 844}}
STEPS = [0, 10, 20, 30]
SEEDS = 3


def expect(target):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def _no_sideways_scroll(page, size: str, where: str) -> None:
    if size != "phone":
        return
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= VIEWPORTS["phone"]["width"] + 1, f"{where} scrolls sideways at 390 px ({width} px wide)"


def _attach_runs(finding: Finding, author) -> tuple[Run, Run]:
    """The original reproduction (effect -0.5, cpu) and another experiment's (effect -0.2, an H100),
    each run with a curve per arm. Returns the first run of each."""
    values = {"risk": b.RISK_DOWN[:SEEDS], "skill": b.SKILL_FLAT[:SEEDS]}
    original = b.measured(b.echo_experiment(finding, author, params={"effect": -0.5}), values, recompute=False)
    other = b.measured(b.echo_experiment(finding, author, params={"effect": -0.2}), values, hardware="NVIDIA H100")
    RunSeries.objects.bulk_create(
        [
            RunSeries(run=run, arm=arm, name="train_loss", steps=STEPS, logged=len(STEPS),
                      values=[scale * (1.0 + 0.1 * run.seed) / (1 + step) for step in STEPS])
            for run in Run.objects.filter(reproduction__in=[original, other])
            for arm, scale in (("baseline", 1.0), ("intervention", 0.5))
        ]
    )
    return original.runs.order_by("id").first(), other.runs.order_by("id").first()


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_curves_then_a_comparison_of_two_runs_then_the_csv(browser_page, size):
    page = browser_page
    page.set_viewport_size(VIEWPORTS[size])
    author = UserFactory()
    author.set_password(PASSWORD)
    author.save()

    sign_in(page, author.username, PASSWORD)
    page.goto("/findings/new/")
    page.get_by_label("Title").fill("Weight decay halves the risk")
    page.get_by_label("Kind").select_option("fix")
    page.get_by_label("Summary").fill("Decay the weights; the risk halves.")
    page.get_by_role("button", name="Create finding").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Weight decay halves the risk")
    finding = Finding.objects.get(title="Weight decay halves the risk")
    expect(page).to_have_url(re.compile(rf"/findings/{finding.pk}/$"))
    original_run, other_run = _attach_runs(finding, author)

    # (a) the training curves, drawn: one plot per experiment, a line and a band per arm
    page.reload()
    curves = page.locator("section.curves")
    expect(curves.get_by_role("heading", name="Training curves")).to_be_visible()
    figures = curves.locator("figure.curve-figure")
    expect(figures).to_have_count(2)
    for i in range(2):
        figure = figures.nth(i)
        plot = figure.locator("svg[role='img']")
        expect(plot).to_be_visible()
        box = plot.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 50, box
        lines, bands = plot.locator("polyline.curve-line"), plot.locator("polygon.curve-band")
        expect(lines).to_have_count(2)
        expect(bands).to_have_count(2)
        for points in lines.evaluate_all("els => els.map(e => e.getAttribute('points'))"):
            assert len(points.split()) == len(STEPS)  # the mean at every step
        colours = lines.evaluate_all("els => els.map(e => e.getAttribute('stroke'))")
        assert len(set(colours)) == 2, colours  # the arms told apart
        drawn = lines.evaluate_all("els => els.map(e => e.getBBox().width)")
        assert min(drawn) > 50, drawn  # the lines span the steps, not a point
        expect(figure.locator("figcaption")).to_contain_text(f"baseline ({SEEDS} runs)")
        expect(figure.locator("figcaption")).to_contain_text(f"intervention ({SEEDS} runs)")
        expect(figure.locator("figcaption")).to_contain_text("train_loss")
    _no_sideways_scroll(page, size, "the finding page")

    # (b) tick two runs in the runs list, compare them: the differing parameter is marked changed
    for run in (original_run, other_run):
        check = page.get_by_role("checkbox", name=f"Compare run #{run.pk}")
        check.scroll_into_view_if_needed()
        check.check()
    page.get_by_role("button", name="Compare selected").click()
    expect(page).to_have_url(re.compile(rf"/findings/{finding.pk}/compare/\?run={original_run.pk}&run={other_run.pk}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Compare runs and reproductions")
    metrics = page.locator("table.compare-metrics")
    expect(metrics.locator(f"th[data-item='run-{original_run.pk}']")).to_contain_text("original")
    expect(metrics.locator(f"th[data-item='run-{other_run.pk}']")).to_be_visible()
    diff = page.locator("table.config-diff")
    expect(diff).to_be_visible()
    expect(page.locator(".compare-original")).to_contain_text(f"Run #{original_run.pk}")
    effect = diff.locator("tr[data-key='parameter effect']")
    expect(effect).to_have_class(re.compile(r"\bconfig-diff__changed\b"))
    cells = effect.locator("td")
    expect(cells).to_have_count(3)  # the original, then the two compared runs
    expect(cells.nth(0)).to_have_text("-0.5")
    expect(cells.nth(1)).not_to_have_attribute("data-changed", "true")  # the original run itself
    changed = cells.nth(2)
    expect(changed).to_have_attribute("data-changed", "true")
    expect(changed.locator("code")).to_have_text("-0.2")
    changed.scroll_into_view_if_needed()
    expect(changed.locator(".diff-mark")).to_be_visible()
    expect(changed.locator(".diff-mark")).to_have_text("changed")
    background = changed.evaluate("el => getComputedStyle(el).backgroundColor")
    plain = cells.nth(1).evaluate("el => getComputedStyle(el).backgroundColor")
    assert background != plain, (background, plain)  # highlighted
    hardware = diff.locator("tr[data-key='hardware'] td").nth(2)
    expect(hardware).to_have_attribute("data-changed", "true")
    expect(hardware).to_contain_text("NVIDIA H100")
    expect(diff.locator("tr[data-key='plugin']")).not_to_have_class(re.compile(r"config-diff__changed"))
    _no_sideways_scroll(page, size, "the compare page")

    # (c) the runs as CSV, downloaded from the page
    link = page.locator("p.exports").get_by_role("link", name="CSV")
    link.scroll_into_view_if_needed()
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.suggested_filename == f"finding-{finding.pk}.csv"
    with open(download.path(), encoding="utf-8", newline="") as f:
        text = f.read()
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == RUN_COLUMNS
    rows = list(reader)
    assert len(rows) == 2 * SEEDS * 2 * 2  # reproductions, seeds, metrics, arms
    assert {r["finding"] for r in rows} == {str(finding.pk)}
    assert {r["hardware"] for r in rows} == {"cpu", "NVIDIA H100"}
    assert len({r["experiment"] for r in rows}) == 2
    stored = {
        (m.run_id, m.arm, m.metric): m.value
        for m in Measurement.objects.filter(run__reproduction__experiment__finding=finding)
    }
    assert {(int(r["run"]), r["arm"], r["metric"]): float(r["value"]) for r in rows} == stored
    first = {(r["arm"], r["metric"]): float(r["value"]) for r in rows if r["run"] == str(original_run.pk)}
    assert first == {("baseline", "risk"): 1.00, ("intervention", "risk"): 0.50,
                     ("baseline", "skill"): 1.00, ("intervention", "skill"): 1.01}
    assert all(r["state"] == "succeeded" and r["plugin"] == "echo" for r in rows)
    screenshot(page, f"evidence-flow-compare-{size}")
