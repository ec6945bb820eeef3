"""The curves API: /runs/{id}/series/ and /findings/{id}/series/ (visibility, thinning for plots,
bad input), curves posted with self-reported runs, and partial artifacts marked in run details."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from registry.reproductions.models import Artifact, Experiment, Reproduction, Run, RunSeries
from registry.reproductions.series import MAX_MAX_POINTS, downsample
from tests.api.helpers import assert_error
from tests.effects.builders import echo_params, experiment_for
from tests.factories import FindingFactory

pytestmark = pytest.mark.django_db


def _runs(experiment: Experiment, seeds: list[int], *, points: int = 5, state: str = "succeeded") -> list[Run]:
    """Runs with a `loss` curve per arm and an `accuracy` curve (baseline), inserted directly."""
    reproduction = Reproduction.objects.create(experiment=experiment, requested_by=experiment.created_by,
                                               seeds=seeds)
    runs = [Run.objects.create(reproduction=reproduction, seed=seed, state=state) for seed in seeds]
    for run in runs:
        RunSeries.objects.bulk_create([
            RunSeries(run=run, arm="baseline", name="loss", steps=list(range(points)),
                      values=[1.0 / (1 + i + run.seed) for i in range(points)], logged=points),
            RunSeries(run=run, arm="intervention", name="loss", steps=list(range(points)),
                      values=[2.0 / (1 + i + run.seed) for i in range(points)], logged=points),
            RunSeries(run=run, arm="baseline", name="accuracy", steps=[0, 10], values=[0.1, 0.9], logged=2),
        ])
    return runs


@pytest.fixture
def public(user):
    experiment = experiment_for(FindingFactory(created_by=user))
    return experiment, _runs(experiment, [0, 1])


@pytest.fixture(params=["restricted", "embargoed"])
def hidden(request, user):
    embargo = timezone.now() + timedelta(days=30) if request.param == "embargoed" else None
    finding = FindingFactory(created_by=user, visibility="restricted", embargo_until=embargo)
    experiment = experiment_for(finding)
    return experiment, _runs(experiment, [0])


def test_run_curves_as_stored(anon, public):
    experiment, (run, _) = public
    response = anon.get(f"/api/v1/runs/{run.pk}/series/")
    assert response.status_code == 200
    body = response.json()
    assert (body["run"], body["seed"], body["state"]) == (run.pk, 0, "succeeded")
    assert [(c["arm"], c["name"]) for c in body["series"]] == [
        ("baseline", "accuracy"), ("baseline", "loss"), ("intervention", "loss")]
    loss = body["series"][1]
    assert loss["steps"] == [0, 1, 2, 3, 4] and loss["values"][1] == 0.5
    assert (loss["logged"], loss["points"]) == (5, 5)
    filtered = anon.get(f"/api/v1/runs/{run.pk}/series/", {"name": "loss", "arm": "intervention"}).json()
    assert [(c["arm"], c["name"]) for c in filtered["series"]] == [("intervention", "loss")]


def test_finding_curves_across_runs(anon, public):
    experiment, runs = public
    response = anon.get(f"/api/v1/findings/{experiment.finding_id}/series/", {"name": "loss"})
    assert response.status_code == 200
    body = response.json()
    assert (body["finding"], body["max_points"], body["truncated"]) == (experiment.finding_id, 500, False)
    assert [(c["arm"], c["run"], c["seed"]) for c in body["series"]] == [
        ("baseline", runs[0].pk, 0), ("baseline", runs[1].pk, 1),
        ("intervention", runs[0].pk, 0), ("intervention", runs[1].pk, 1)]
    first = body["series"][0]
    assert (first["experiment"], first["plugin"], first["state"], first["self_reported"]) == (
        experiment.pk, "echo", "succeeded", False)
    assert first["values"] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    only = anon.get(f"/api/v1/findings/{experiment.finding_id}/series/", {"arm": "baseline", "name": "accuracy"})
    assert [(c["arm"], c["name"]) for c in only.json()["series"]] == [("baseline", "accuracy")] * 2


@pytest.mark.parametrize("path", ["runs", "findings"])
def test_hidden_curves_are_404_to_anonymous_and_strangers_200_to_the_owner(
    path, hidden, anon, client_for, user, other_user
):
    experiment, (run,) = hidden
    url = f"/api/v1/runs/{run.pk}/series/" if path == "runs" else f"/api/v1/findings/{experiment.finding_id}/series/"
    for client in (anon, client_for(other_user)):
        response = client.get(url)
        assert_error(response, 404)
        assert "loss" not in response.content.decode()
    response = client_for(user).get(url)
    assert response.status_code == 200
    assert len(response.json()["series"]) == 3


def test_missing_run_or_finding_is_404(anon):
    assert_error(anon.get("/api/v1/runs/999999/series/"), 404)
    assert_error(anon.get("/api/v1/findings/999999/series/"), 404)


def test_curves_are_thinned_to_max_points_keeping_ends_and_extremes(anon, user):
    experiment = experiment_for(FindingFactory(created_by=user))
    reproduction = Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=[0])
    run = Run.objects.create(reproduction=reproduction, seed=0, state="succeeded")
    values = [math.sin(i / 50) for i in range(1000)]
    values[437] = 9.0  # a spike
    values[811] = -9.0  # a dip
    RunSeries.objects.create(run=run, arm="baseline", name="loss", steps=[3 * i for i in range(1000)],
                             values=values, logged=1000)
    response = anon.get(f"/api/v1/findings/{experiment.finding_id}/series/", {"max_points": "50"})
    assert response.status_code == 200
    (curve,) = response.json()["series"]
    assert len(curve["steps"]) <= 50 and (curve["points"], curve["logged"]) == (1000, 1000)
    assert curve["steps"][0] == 0 and curve["steps"][-1] == 2997
    assert curve["steps"] == sorted(curve["steps"])
    assert 9.0 in curve["values"] and -9.0 in curve["values"]
    assert curve["steps"][curve["values"].index(9.0)] == 3 * 437
    again = anon.get(f"/api/v1/findings/{experiment.finding_id}/series/", {"max_points": "50"}).json()
    assert again["series"][0] == curve  # deterministic
    # the run endpoint serves everything stored
    assert len(anon.get(f"/api/v1/runs/{run.pk}/series/").json()["series"][0]["steps"]) == 1000


def test_downsample_keeps_short_curves_whole():
    assert downsample([1, 2, 3], [0.1, 0.2, 0.3], 3) == ([1, 2, 3], [0.1, 0.2, 0.3])
    steps, values = downsample(list(range(10)), [float(i % 3) for i in range(10)], 2)
    assert steps == [0, 9]


@pytest.mark.parametrize("bad", ["abc", "1", "0", "-5", str(MAX_MAX_POINTS + 1), "1e3", " "])
def test_bad_max_points_is_a_400_naming_it(anon, public, bad):
    experiment, _ = public
    response = anon.get(f"/api/v1/findings/{experiment.finding_id}/series/", {"max_points": bad})
    body = assert_error(response, 400, "max_points")
    assert "max_points" in body["detail"]


def test_bad_name_is_a_400_naming_it(anon, public):
    experiment, (run, _) = public
    assert_error(anon.get(f"/api/v1/findings/{experiment.finding_id}/series/", {"name": "x" * 101}), 400, "name")
    assert_error(anon.get(f"/api/v1/runs/{run.pk}/series/", {"arm": "a\x00b"}), 400, "arm")


def test_finding_curves_cost_a_constant_number_of_queries(anon, user):
    def queries(n_runs: int) -> int:
        experiment = experiment_for(FindingFactory(created_by=user))
        _runs(experiment, list(range(n_runs)))
        with CaptureQueriesContext(connection) as captured:
            response = anon.get(f"/api/v1/findings/{experiment.finding_id}/series/")
        assert response.status_code == 200 and len(response.json()["series"]) == 3 * n_runs
        return len(captured)

    assert queries(1) == queries(8)


def test_finding_curves_read_a_bounded_number_of_points(anon, public, monkeypatch):
    """Stored points are read until FINDING_MAX_STORED_POINTS, then `truncated` (not gigabytes
    of JSON per request for a finding with thousands of long curves)."""
    from registry.reproductions import series

    experiment, _ = public  # 2 runs x (5 + 5 + 2) points
    monkeypatch.setattr(series, "FINDING_MAX_STORED_POINTS", 14)
    body = anon.get(f"/api/v1/findings/{experiment.finding_id}/series/").json()
    assert body["truncated"] is True and [len(c["steps"]) for c in body["series"]] == [2, 2, 5, 5]
    monkeypatch.setattr(series, "FINDING_MAX_STORED_POINTS", 24)
    assert anon.get(f"/api/v1/findings/{experiment.finding_id}/series/").json()["truncated"] is False


def test_reading_curves_writes_nothing(anon, public):
    experiment, (run, _) = public
    with CaptureQueriesContext(connection) as captured:
        anon.get(f"/api/v1/findings/{experiment.finding_id}/series/")
        anon.get(f"/api/v1/runs/{run.pk}/series/")
    assert all(q["sql"].lstrip().upper().startswith(("SELECT", "SAVEPOINT", "RELEASE")) for q in captured), [
        q["sql"] for q in captured]


def test_the_schema_documents_the_curves_endpoints(anon):
    response = anon.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    finding = paths["/api/v1/findings/{id}/series/"]["get"]
    assert {p["name"] for p in finding["parameters"]} >= {"id", "name", "arm", "max_points"}
    assert set(finding["responses"]) >= {"200", "400", "404"}
    assert "/api/v1/runs/{id}/series/" in paths


# ---------------------------------------------------------------- self-reported curves


def _body(**overrides) -> dict:
    body = {
        "seed": 7,
        "measurements": {"baseline": {"risk": 1.0, "skill": 1.0, "width": 3.0},
                         "intervention": {"risk": 0.5, "skill": 1.0, "width": 3.0}},
        "params": echo_params(),
        "hardware": "cpu",
        "series": [{"arm": "baseline", "name": "loss", "steps": [0, 10, 20], "values": [2.0, 1.0, 0.5]},
                   {"arm": "intervention", "name": "loss", "steps": [0, 10], "values": [2.0, 0.2]}],
    }
    body.update(overrides)
    return body


@pytest.fixture
def experiment(user):
    return experiment_for(FindingFactory(created_by=user))


def test_self_reported_curves_are_stored_and_served(api, anon, experiment):
    response = api.post(f"/api/v1/experiments/{experiment.pk}/self-reported-runs/", _body(), format="json")
    assert response.status_code == 201, response.json()
    run_id = response.json()["id"]
    body = anon.get(f"/api/v1/runs/{run_id}/series/").json()
    assert [(c["arm"], c["steps"], c["values"]) for c in body["series"]] == [
        ("baseline", [0, 10, 20], [2.0, 1.0, 0.5]), ("intervention", [0, 10], [2.0, 0.2])]
    curves = anon.get(f"/api/v1/findings/{experiment.finding_id}/series/").json()["series"]
    assert {c["self_reported"] for c in curves} == {True}


def test_self_reported_batch_takes_curves_per_run(api, experiment):
    item = {k: v for k, v in _body().items() if k in ("seed", "measurements", "series")}
    response = api.post(f"/api/v1/experiments/{experiment.pk}/self-reported-runs/batch/",
                        {"runs": [item, {**item, "seed": 8}], "params": echo_params(), "hardware": "cpu"},
                        format="json")
    assert response.status_code == 201, response.json()
    assert RunSeries.objects.filter(run__in=response.json()["runs"]).count() == 4


@pytest.mark.parametrize(
    ("series", "field"),
    [
        ({"arm": "baseline"}, "series"),
        ([{"arm": "treatment", "name": "loss", "steps": [0], "values": [1.0]}], "series[0].arm"),
        ([{"arm": "baseline", "name": "bad name", "steps": [0], "values": [1.0]}], "series[0].name"),
        ([{"arm": "baseline", "name": "loss", "steps": [0, 1], "values": [1.0]}], "series[0].values"),
        ([{"arm": "baseline", "name": "loss", "steps": [5, 5], "values": [1.0, 2.0]}], "series[0].steps"),
        ([{"arm": "baseline", "name": "loss", "steps": [0, 1.5], "values": [1.0, 2.0]}], "series[0].steps"),
        ([{"arm": "baseline", "name": "loss", "steps": [0], "values": ["x"]}], "series[0].values"),
        ([{"arm": "baseline", "name": "loss", "steps": [0], "values": [1.0], "colour": "red"}], "series[0].colour"),
        ([{"arm": "baseline", "name": "loss", "steps": [], "values": []}], "series[0].steps"),
        ([{"arm": "baseline", "name": "loss", "steps": [0], "values": [1.0]}] * 2, "series[1].name"),
        ([{"arm": "baseline", "name": f"c{i}", "steps": [0], "values": [1.0]} for i in range(33)], "series"),
    ],
)
def test_bad_self_reported_curves_are_a_400_naming_the_field(api, experiment, series, field):
    response = api.post(f"/api/v1/experiments/{experiment.pk}/self-reported-runs/", _body(series=series),
                        format="json")
    assert_error(response, 400, field)
    assert not Run.objects.exists() and not RunSeries.objects.exists()


def test_a_non_finite_self_reported_point_is_a_400_naming_it(api, experiment):
    raw = json.dumps(_body()).replace("[2.0, 1.0, 0.5]", "[2.0, NaN, 0.5]")
    response = api.post(f"/api/v1/experiments/{experiment.pk}/self-reported-runs/", raw,
                        content_type="application/json")
    body = assert_error(response, 400, "series[0].values")
    assert "not finite" in body["detail"]
    assert not Run.objects.exists()


def test_a_long_self_reported_curve_is_thinned_like_a_workers(api, experiment):
    steps = list(range(25_000))
    series = [{"arm": "baseline", "name": "loss", "steps": steps, "values": [float(s) for s in steps]}]
    response = api.post(f"/api/v1/experiments/{experiment.pk}/self-reported-runs/", _body(series=series),
                        format="json")
    assert response.status_code == 201, response.json()
    stored = RunSeries.objects.get()
    assert stored.logged == 25_000 and len(stored.steps) <= 10_000 and stored.steps[-1] == 24_999


# ---------------------------------------------------------------- partial artifacts, marked


def test_run_detail_marks_artifacts_of_a_failed_run_partial(anon, public):
    _, (run, _) = public
    Run.objects.filter(pk=run.pk).update(state="failed")
    Artifact.objects.create(run=run, name="model.pt", sha256="0" * 64, size=3,
                            content_type="application/x-checkpoint", run_state="failed")
    response = anon.get(f"/api/v1/runs/{run.pk}/")
    assert response.status_code == 200
    (artifact,) = response.json()["artifacts"]
    assert (artifact["run_state"], artifact["partial"], artifact["content_type"]) == (
        "failed", True, "application/x-checkpoint")
