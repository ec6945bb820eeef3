"""The training curves, drawn as inline SVG (dashboard/_curve_figure.html). The finding page: per
arm, the mean across seeds, a min..max band and each seed's own thin line with hover points naming
the seed and value. The run page: the run's own curves, one line per arm. Visibility is the page's;
text is escaped; the queries do not grow with the runs or curves."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from registry.dashboard.curves import curve_plots
from registry.reproductions.models import Reproduction, Run, RunSeries
from registry.reproductions.series import series_bands
from tests.effects.builders import experiment_for
from tests.factories import FindingFactory

pytestmark = pytest.mark.django_db


def _finding(user, seeds=(0, 1, 2), *, visibility="public", state="succeeded", name="test_accuracy"):
    experiment = experiment_for(FindingFactory(created_by=user, visibility=visibility))
    reproduction = Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=list(seeds))
    for seed in seeds:
        run = Run.objects.create(reproduction=reproduction, seed=seed, state=state)
        for arm, scale in (("baseline", 0.5), ("intervention", 1.0)):
            RunSeries.objects.create(run=run, arm=arm, name=name, steps=[0, 10, 20],
                                     values=[0.0, scale * (0.4 + 0.1 * seed), scale * (0.8 + 0.1 * seed)], logged=3)
    return experiment.finding


def _page(client: Client, finding) -> str:
    response = client.get(f"/findings/{finding.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def test_bands_are_mean_and_range_across_seeds():
    curves = [{"experiment": 1, "name": "acc", "arm": "baseline", "steps": [0, 10, 20], "values": v}
              for v in ([0.0, 0.2, 0.4], [0.0, 0.4, 0.8], [0.0, 0.3, 0.6])]
    curves.append({"experiment": 1, "name": "acc", "arm": "baseline", "steps": [0, 20], "values": [0.0, 1.0]})
    (band,) = series_bands(curves)
    assert band["steps"] == [0, 20]  # only the steps every run logged
    assert band["runs"] == 4
    assert band["mean"] == pytest.approx([0.0, (0.4 + 0.8 + 0.6 + 1.0) / 4])
    assert (band["low"], band["high"]) == ([0.0, 0.4], [0.0, 1.0])


def test_plot_geometry_stays_in_the_frame():
    bands = [{"experiment": 3, "plugin": "grokking", "name": "acc", "arm": arm, "runs": 2, "steps": [0, 5, 10],
              "mean": [0.0, 0.5, 1.0], "low": [0.0, 0.25, 0.9], "high": [0.0, 0.75, 1.0]}
             for arm in ("baseline", "intervention")]
    (plot,) = curve_plots(bands)
    assert [a["arm"] for a in plot["arms"]] == ["baseline", "intervention"]
    for arm in plot["arms"]:
        points = [tuple(map(float, p.split(","))) for p in (arm["line"] + " " + arm["band"]).split()]
        assert all(plot["left"] <= x <= plot["right"] and plot["top"] <= y <= plot["bottom"] for x, y in points)
        assert len(arm["band"].split()) == 6  # upper then lower edge
    assert (plot["x_low"], plot["x_high"], plot["y_low"], plot["y_high"]) == ("0", "10", "0", "1")


def test_the_page_plots_the_curves_per_arm(client, user):
    finding = _finding(user)
    html = _page(client, finding)
    section = html[html.index('id="curves-heading"'):]
    assert "Training curves" in section
    assert section.count('class="curve-line"') == 2 and section.count('class="curve-band"') == 2
    assert "test_accuracy" in section and "baseline (3 runs)" in section and "intervention (3 runs)" in section
    line = re.search(r'class="curve-line" points="([^"]+)"', section).group(1)
    assert len(line.split()) == 3


def test_no_curves_no_section(client, user):
    finding = _finding(user, seeds=(), name="unused")
    assert 'id="curves-heading"' not in _page(client, finding)


def test_failed_runs_curves_are_not_averaged(client, user):
    finding = _finding(user, state="failed")
    assert 'id="curves-heading"' not in _page(client, finding)


def test_a_hidden_findings_curves_show_to_its_owner_only(readers, user):
    finding = _finding(user, visibility="restricted")
    for reader in readers.values():
        response = reader.get(f"/findings/{finding.pk}/")
        assert response.status_code == 404
        assert b"test_accuracy" not in response.content
    owner = Client()
    owner.force_login(user)
    assert 'class="curve-line"' in _page(owner, finding)


def test_text_in_the_plot_is_escaped(client, user):
    finding = _finding(user, name='x"><script>alert(1)</script>')  # stored directly, past the API's checks
    html = _page(client, finding)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_curves_cost_the_same_queries_whatever_the_runs(client, user):
    def queries(seeds) -> int:
        finding = _finding(user, seeds=seeds)
        with CaptureQueriesContext(connection) as captured:
            _page(client, finding)
        return len([q for q in captured if "reproductions_runseries" in q["sql"]])

    assert queries((0,)) == queries(tuple(range(6))) == 2  # the curves within the points budget, then theirs


def test_a_retracted_experiments_curves_are_not_plotted(client, user):
    """Retracted: kept on record, never pooled (as in the effects), so not averaged into a band."""
    from django.utils import timezone

    from registry.reproductions.models import Experiment

    finding = _finding(user)
    Experiment.objects.filter(finding=finding).update(retracted_at=timezone.now(), retraction_reason="bug")
    assert 'id="curves-heading"' not in _page(client, finding)


def test_the_points_read_for_the_plots_are_bounded(client, user, monkeypatch):
    from registry.reproductions import series

    finding = _finding(user)  # 3 runs x 2 arms x 3 points
    monkeypatch.setattr(series, "FINDING_MAX_STORED_POINTS", 4 * 3)
    section = _page(client, finding)
    assert "baseline (3 runs)" in section and "intervention (1 run)" in section


# ---------------------------------------------------------------- each seed, on hover


def _points(text: str) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in text.split()]


def test_each_seed_is_drawn_with_its_value_on_hover(client, user):
    finding = _finding(user)  # seeds 0, 1, 2; baseline at step 10: 0.5 * (0.4 + 0.1 * seed)
    runs = {run.seed: run.pk for run in Run.objects.filter(reproduction__experiment__finding=finding)}
    section = _page(client, finding).split('id="curves-heading"')[1]
    # the mean and the band are still there, one each per arm, and a thin line per seed and arm
    assert section.count('class="curve-line"') == 2 and section.count('class="curve-band"') == 2
    assert section.count('class="curve-seed"') == 6
    for seed, run in runs.items():
        group = section.split(f'data-arm="baseline" data-seed="{seed}" data-run="{run}">')[1].split("</g>")[0]
        assert f"<title>baseline, seed {seed} (run #{run})</title>" in group
        value = 0.5 * (0.4 + 0.1 * seed)
        assert f"<title>baseline, seed {seed} (run #{run}): {value:.3g} at step 10</title>" in group
        assert group.count('class="curve-point"') == 3
    # every seed's line lies within its arm's band, at the mean line's steps
    for arm in ("baseline", "intervention"):
        band = re.findall(r'class="curve-band" points="([^"]+)"', section)[0 if arm == "baseline" else 1]
        edges = _points(band)
        upper, lower = edges[:3], edges[3:][::-1]
        for seed in runs:
            line = re.search(rf'data-arm="{arm}" data-seed="{seed}"[^>]*>.*?class="curve-seed__line" points="([^"]+)"',
                             section, re.S).group(1)
            for (x, y), (ux, uy), (lx, ly) in zip(_points(line), upper, lower, strict=True):
                assert x == ux == lx and uy <= y <= ly


def test_the_seeds_drawn_one_by_one_are_bounded(client, user, monkeypatch):
    from registry.dashboard import curves

    monkeypatch.setattr(curves, "MAX_SEED_LINES", 2)
    finding = _finding(user, seeds=(0, 1, 2, 3))
    section = _page(client, finding).split('id="curves-heading"')[1]
    assert section.count('class="curve-seed"') == 4  # 2 per arm
    assert "baseline (4 runs; the first 2 drawn one by one)" in section
    band = re.search(r'class="curve-line" points="([^"]+)"', section).group(1)
    assert len(band.split()) == 3  # the mean still over all 4


# ---------------------------------------------------------------- the run page


def _run_with_curves(user, *, visibility="public", state="succeeded", names=("test_accuracy", "train_loss")) -> Run:
    experiment = experiment_for(FindingFactory(created_by=user, visibility=visibility))
    reproduction = Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=[4])
    run = Run.objects.create(reproduction=reproduction, seed=4, state=state)
    for name in names:
        for arm, scale in (("baseline", 0.5), ("intervention", 1.0)):
            RunSeries.objects.create(run=run, arm=arm, name=name, steps=[0, 10, 20],
                                     values=[0.0, scale * 0.4, scale * 0.8], logged=3)
    return run


def _run_page(client: Client, run: Run) -> str:
    response = client.get(f"/runs/{run.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_run_page_plots_its_own_curves_one_line_per_arm(client, user):
    run = _run_with_curves(user)
    _run_with_curves(user, names=("other_runs_curve",))
    html = _run_page(client, run)
    section = html.split('id="run-curves"')[1].split("</section>")[0]
    assert 'id="run-curves-heading">Training curves' in section
    assert section.count("<figure") == 2 and "other_runs_curve" not in html
    for name in ("test_accuracy", "train_loss"):
        figure = section.split("<title id=")[1 if name == "test_accuracy" else 2].split("</figure>")[0]
        assert f"{name} over training steps, this run</title>" in figure
        assert figure.count('class="curve-line"') == 2 and 'class="curve-band"' not in figure
        assert "<title>baseline: 0.2 at step 10</title>" in figure
        assert "<title>intervention: 0.8 at step 20</title>" in figure
        assert "> baseline, " in figure and "> intervention" in figure  # the legend
    line = re.search(r'class="curve-line" points="([^"]+)"', section).group(1)
    assert len(line.split()) == 3


def test_a_run_without_curves_has_no_plot(client, user):
    run = _run_with_curves(user, names=())
    html = _run_page(client, run)
    section = html.split('id="run-curves"')[1].split("</section>")[0]
    assert 'id="run-curves-heading"' not in html and "<figure" not in section


def test_a_hidden_runs_curves_show_to_its_owner_only(readers, user):
    run = _run_with_curves(user, visibility="restricted")
    for reader in readers.values():
        response = reader.get(f"/runs/{run.pk}/")
        assert response.status_code == 404 and b"test_accuracy" not in response.content
    owner = Client()
    owner.force_login(user)
    assert 'id="run-curves-heading"' in _run_page(owner, run)


def test_the_run_pages_curve_names_are_escaped(client, user):
    run = _run_with_curves(user, names=('x"><script>alert(1)</script>',))
    html = _run_page(client, run)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_run_pages_curves_cost_one_query_whatever_their_number(client, user):
    def queries(names) -> int:
        run = _run_with_curves(user, names=names)
        with CaptureQueriesContext(connection) as captured:
            _run_page(client, run)
        return len([q for q in captured if "reproductions_runseries" in q["sql"]])

    assert queries(("a",)) == queries(tuple(f"curve_{i}" for i in range(8))) == 1
