"""The finding page's training curves: per arm, the mean across seeds and a min..max band, drawn
as inline SVG by dashboard/_curves.html; visibility is the page's; text is escaped."""

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
