"""The "Experiments and runs" section, the run page and the reproduction form: censored
time-to-event values read "> budget (not reached)" and stay out of the dot plots; retracted
experiments are marked with their reason and are never offered for reproduction. Anonymous
readers and signed-in strangers see the same section."""

from __future__ import annotations

import re

import pytest

from plugins.registry import register_temporarily
from registry.findings.services import experiment_retract
from registry.reproductions.models import Experiment, Reproduction, Run
from registry.reproductions.services import experiment_create
from tests.dashboard import builders as b
from tests.dashboard.test_views import page
from tests.fakes.plugins import TimedExperiment

pytestmark = pytest.mark.django_db

NEVER = b.Censored(100.0)




def runs_block(html: str, experiment_pk: int) -> str:
    return html.split(f'id="experiment-{experiment_pk}"')[1].split('<div class="experiment')[0]


def plot(html: str, metric: str) -> str:
    return html.split(f'<figure class="plot" data-plot-metric="{metric}">')[1].split("</figure>")[0]


def dot_titles(svg: str, arm: str) -> list[str]:
    return re.findall(rf"<title>{arm}, seed (\d+) \(run \d+\): ([^<]*)</title>", svg)


# ---------------------------------------------------------------- censored values


@pytest.fixture
def timed_finding(user):
    """A "grokking-like" run: the baseline never reaches the event within 100 steps on seed 0."""
    with register_temporarily(TimedExperiment):
        finding = b.finding(user, title="Learns faster")
        experiment = experiment_create(finding=finding, user=user, plugin="timed", reproduce=False, default_seeds=3)
        reproduction = b.measured(
            experiment,
            {
                "steps_to_goal": [(NEVER, 40.0), (50.0, 42.0), (60.0, 38.0)],
                "accuracy": [(0.50, 0.80), (0.52, 0.81), (0.49, 0.79)],
                "loss": [(1.0, 0.9), (1.1, 1.0), (0.9, 0.8)],
                "count": [(0.0, 1.0), (0.0, 2.0), (0.0, 1.0)],
            },
        )
        yield finding, experiment, reproduction


def test_censored_value_reads_not_reached_in_the_runs_section(timed_finding, readers):
    finding, experiment, _ = timed_finding
    for who, client in readers.items():
        for url in (f"/findings/{finding.pk}/", f"/findings/{finding.pk}/runs/"):
            block = runs_block(page(client, url), experiment.pk)
            table = block.split('class="table measurements-table"')[1].split("</table>")[0]
            cells = re.findall(r'<td class="number[^"]*"[^>]*>([^<]*)</td>', table)
            assert "&gt; 100 (not reached)" in cells, (who, url)
            assert "100" not in cells  # the budget is never shown as a value
            assert cells.count("&gt; 100 (not reached)") == 1  # only seed 0's baseline
            assert "50" in cells and "40" in cells  # reached values stay plain numbers
            assert 'data-censored="true"' in table
            assert "> 100" not in block  # escaped
            assert "the value is a lower bound on the time to the event, not a time" in block


def test_censored_value_is_left_out_of_the_dot_plot_with_a_note(timed_finding, readers):
    finding, experiment, _ = timed_finding
    for who, client in readers.items():
        block = runs_block(page(client, f"/findings/{finding.pk}/runs/"), experiment.pk)
        steps = plot(block, "steps_to_goal")
        baseline = dot_titles(steps, "baseline")
        assert sorted(seed for seed, _ in baseline) == ["1", "2"], who  # seed 0's budget is not drawn
        assert all(value != "100" for _, value in baseline)
        assert len(dot_titles(steps, "intervention")) == 3
        assert ">baseline</text>" in steps  # the arm's row is kept
        assert "Not reached within the budget: 1 baseline value(s), left out of the plot" in steps
        # a metric without censoring has no note
        assert "Not reached" not in plot(block, "accuracy")
        assert len(dot_titles(plot(block, "accuracy"), "baseline")) == 3


def test_censored_value_reads_not_reached_on_the_run_page(timed_finding, readers):
    _, _, reproduction = timed_finding
    censored_run = reproduction.runs.get(seed=0)
    reached_run = reproduction.runs.get(seed=1)
    for who, client in readers.items():
        html = page(client, f"/runs/{censored_run.pk}/")
        section = html.split('id="measurements-heading"')[1].split("</section>")[0]
        cells = re.findall(r'<td class="number[^"]*"[^>]*>([^<]*)</td>', section)
        assert "&gt; 100 (not reached)" in cells and "100" not in cells, who
        assert "not a time" in section
        html = page(client, f"/runs/{reached_run.pk}/")
        section = html.split('id="measurements-heading"')[1].split("</section>")[0]
        assert "not reached" not in section and "50" in section


def test_every_value_censored_gives_no_plot_only_the_note(user, client):
    with register_temporarily(TimedExperiment):
        finding = b.finding(user)
        experiment = experiment_create(finding=finding, user=user, plugin="timed", reproduce=False, default_seeds=3)
        b.measured(experiment, {"steps_to_goal": [(NEVER, NEVER)] * 3, "accuracy": [(0.5, 0.6)] * 3}, recompute=False)
        block = runs_block(page(client, f"/findings/{finding.pk}/runs/"), experiment.pk)
    steps = plot(block, "steps_to_goal")
    assert "<svg" not in steps and "<circle" not in steps
    assert "3 baseline, 3 intervention value(s), left out of the plot" in steps
    assert "<svg" in plot(block, "accuracy")


def test_measurement_table_and_plots_selectors(timed_finding):
    from registry.dashboard import selectors

    _, _, reproduction = timed_finding
    runs = list(reproduction.runs.order_by("seed").prefetch_related("measurements"))
    table = selectors.measurement_table(runs)
    column = table["metrics"].index("steps_to_goal")
    first = table["rows"][0]
    assert first["arm"] == "baseline" and first["run"].seed == 0
    assert first["values"][column] == {"value": 100.0, "censored": True, "text": "> 100 (not reached)"}
    assert table["rows"][1]["values"][column] == {"value": 40.0, "censored": False, "text": "40"}
    assert table["censored"] == 1 and table["censored_note"]
    plots = {p["metric"]: p for p in selectors.metric_plots(runs)}
    assert plots["steps_to_goal"]["censored"] == 1 and "1 baseline" in plots["steps_to_goal"]["note"]
    assert plots["steps_to_goal"]["svg"].count("<circle") == 5
    assert plots["accuracy"]["censored"] == 0 and plots["accuracy"]["note"] == ""


# ---------------------------------------------------------------- retracted experiments


@pytest.fixture
def retracted_first(user):
    """A finding whose first experiment (a smoke test, measured) is retracted; the second is kept."""
    finding = b.finding(user)
    smoke = b.echo_experiment(finding, user, default_seeds=7)
    kept = b.echo_experiment(finding, user, default_seeds=4)
    b.measured(smoke, recompute=False)
    experiment_retract(experiment=smoke, user=user, reason="a 20-step <b>smoke</b> test")
    return finding, smoke, kept


def test_runs_section_marks_a_retracted_experiment_with_its_reason(retracted_first, readers):
    finding, smoke, kept = retracted_first
    for who, client in readers.items():
        for url in (f"/findings/{finding.pk}/", f"/findings/{finding.pk}/runs/"):
            html = page(client, url)
            gone = runs_block(html, smoke.pk)
            assert 'badge badge--retracted">retracted<' in gone, (who, url)
            assert "a 20-step &lt;b&gt;smoke&lt;/b&gt; test" in gone  # the reason, escaped
            assert "<b>smoke</b>" not in html
            assert "excluded from the effects" in gone
            assert "experiment--retracted" in html.split(f'id="experiment-{smoke.pk}"')[0][-80:]
            kept_block = runs_block(html, kept.pk)
            assert "badge--retracted" not in kept_block and "Retracted on" not in kept_block
            assert "experiment--retracted" not in html.split(f'id="experiment-{kept.pk}"')[0][-80:]


def test_reproduction_form_leaves_retracted_experiments_out(retracted_first, stranger, client):
    finding, smoke, kept = retracted_first
    html = page(stranger, f"/findings/{finding.pk}/")
    form = html.split('id="request-heading"')[1].split("</form>")[0]
    options = re.findall(r'<option value="(\d+)"([^>]*)>', form)
    assert [int(pk) for pk, _ in options] == [kept.pk]  # the retracted one is not offered
    assert "selected" in options[0][1]  # and the default is the kept one
    assert 'name="n_seeds" value="4"' in form  # its default seeds, not the retracted one's 7
    assert "Request reproduction" not in page(client, f"/findings/{finding.pk}/")  # anonymous: no form


def test_posting_a_retracted_experiment_is_refused(retracted_first, stranger, client):
    finding, smoke, kept = retracted_first
    before = Reproduction.objects.count()
    response = client.post(f"/findings/{finding.pk}/reproductions/", {"experiment": smoke.pk, "n_seeds": 2})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    response = stranger.post(f"/findings/{finding.pk}/reproductions/", {"experiment": smoke.pk, "n_seeds": 2})
    assert response.status_code == 400
    assert "The reproduction was not requested" in response.content.decode()
    assert Reproduction.objects.count() == before
    assert not Run.objects.filter(reproduction__experiment=smoke, state=Run.State.QUEUED).exists()
    response = stranger.post(f"/findings/{finding.pk}/reproductions/", {"experiment": kept.pk, "n_seeds": 2})
    assert response.status_code == 302
    assert Reproduction.objects.filter(experiment=kept).count() == 1


def test_no_form_when_every_experiment_is_retracted(user, stranger):
    finding = b.finding(user)
    only = b.echo_experiment(finding, user)
    experiment_retract(experiment=only, user=user, reason="wrong parameters")
    html = page(stranger, f"/findings/{finding.pk}/")
    assert "Request reproduction" not in html
    assert "badge--retracted" in runs_block(html, only.pk)
    assert Experiment.objects.filter(pk=only.pk, retracted_at__isnull=False).exists()
