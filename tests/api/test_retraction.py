"""Retracting an experiment: kept for the record and shown as retracted, excluded from effects
(a recompute is requested), never reproduced again; only its finding's authors or staff."""

from __future__ import annotations

import pytest

from registry.effects.models import FindingEffects
from registry.events.models import Event
from registry.reproductions.models import Experiment
from tests.api.helpers import assert_error, counts

pytestmark = pytest.mark.django_db

REASON = "a 20-step smoke test, not the experiment the claims are about"


def retract_url(experiment: Experiment) -> str:
    return f"/api/v1/experiments/{experiment.pk}/retract/"


@pytest.fixture
def experiment(finding, make_experiment) -> Experiment:
    return make_experiment(finding, reproduce=False)


def test_an_author_retracts_an_experiment(api, experiment):
    FindingEffects.objects.filter(finding=experiment.finding).update(pending=False)
    response = api.post(retract_url(experiment), {"reason": f"  {REASON}  "}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == experiment.pk and body["retracted_at"] and body["retraction_reason"] == REASON
    experiment.refresh_from_db()
    assert experiment.retracted_at is not None and experiment.retraction_reason == REASON
    event = Event.objects.filter(type="experiment.retracted").get()
    assert (event.finding_id, event.plugin) == (experiment.finding_id, "echo")
    assert event.payload == {"finding": experiment.finding_id, "experiment": experiment.pk, "plugin": "echo",
                             "reason": REASON, "cancelled_runs": []}
    assert FindingEffects.objects.get(finding=experiment.finding).pending  # a recompute was requested
    # kept for the record, and shown as retracted
    shown = api.get(f"/api/v1/experiments/{experiment.pk}/").json()
    assert (shown["retraction_reason"], shown["retracted_at"]) == (REASON, body["retracted_at"])
    brief = api.get(f"/api/v1/findings/{experiment.finding_id}/").json()["experiments"]
    assert [e["retracted_at"] for e in brief] == [body["retracted_at"]]


def test_staff_may_retract(client_for, staff_user, experiment):
    assert client_for(staff_user).post(retract_url(experiment), {"reason": REASON}, format="json").status_code == 200


def test_anonymous_may_not_retract(anon, experiment):
    before = counts()
    response = anon.post(retract_url(experiment), {"reason": REASON}, format="json")
    assert response.status_code in (401, 403)
    assert counts() == before
    assert Experiment.objects.get(pk=experiment.pk).retracted_at is None


def test_a_signed_in_stranger_may_not_retract(client_for, other_user, experiment):
    before = counts()
    # no reason: the stranger learns nothing from a 400 either
    for body in ({"reason": REASON}, {}):
        assert_error(client_for(other_user).post(retract_url(experiment), body, format="json"), 403)
    assert counts() == before
    assert Experiment.objects.get(pk=experiment.pk).retracted_at is None


def test_an_invisible_experiment_is_404(client_for, other_user, make_finding, make_experiment):
    hidden = make_experiment(make_finding(title="Restricted", visibility="restricted"), reproduce=False)
    assert_error(client_for(other_user).post(retract_url(hidden), {"reason": REASON}, format="json"), 404)
    assert Experiment.objects.get(pk=hidden.pk).retracted_at is None


def test_retracting_twice_is_400(api, experiment):
    assert api.post(retract_url(experiment), {"reason": REASON}, format="json").status_code == 200
    first = Experiment.objects.get(pk=experiment.pk)
    before = counts()
    body = assert_error(api.post(retract_url(experiment), {"reason": "again"}, format="json"), 400, "experiment")
    assert "already retracted" in body["detail"]
    assert counts() == before
    again = Experiment.objects.get(pk=experiment.pk)
    assert (again.retracted_at, again.retraction_reason) == (first.retracted_at, REASON)


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}, {"reason": 42}, {"reason": "x" * 2001}])
def test_a_reason_is_required_and_bounded(api, experiment, body):
    before = counts()
    assert_error(api.post(retract_url(experiment), body, format="json"), 400, "reason")
    assert counts() == before
    assert Experiment.objects.get(pk=experiment.pk).retracted_at is None


def test_a_retracted_experiment_is_not_reproduced(api, experiment):
    assert api.post(retract_url(experiment), {"reason": REASON}, format="json").status_code == 200
    before = counts()
    body = assert_error(api.post(f"/api/v1/experiments/{experiment.pk}/reproductions/", {"n_seeds": 2},
                                 format="json"), 400, "experiment")
    assert "retracted" in body["detail"]
    body = assert_error(api.post(f"/api/v1/experiments/{experiment.pk}/self-reported-runs/", {
        "seed": 1, "params": {}, "hardware": "cpu",
        "measurements": {"baseline": {"risk": 1.0, "skill": 1.0, "width": 3.0},
                         "intervention": {"risk": 0.5, "skill": 1.0, "width": 3.0}},
    }, format="json"), 400, "experiment")
    assert "retracted" in body["detail"]
    assert counts() == before


def test_rereproduce_skips_retracted_experiments(api, finding, make_experiment):
    kept = make_experiment(finding, reproduce=False)
    retracted = make_experiment(finding, reproduce=False)
    assert api.post(retract_url(retracted), {"reason": REASON}, format="json").status_code == 200
    response = api.post(f"/api/v1/findings/{finding.pk}/rereproduce/", format="json")
    assert response.status_code in (200, 201, 202), response.content
    assert kept.reproductions.count() == 1 and retracted.reproductions.count() == 0


def test_retracting_cancels_the_runs_still_to_come(api, finding, make_experiment):
    from registry.reproductions.models import Run

    experiment = make_experiment(finding, reproduce=False)
    response = api.post(f"/api/v1/experiments/{experiment.pk}/reproductions/", {"seeds": [1, 2]}, format="json")
    assert response.status_code == 202, response.content
    queued = sorted(Run.objects.filter(reproduction__experiment=experiment).values_list("pk", flat=True))
    assert len(queued) == 2
    assert api.post(retract_url(experiment), {"reason": REASON}, format="json").status_code == 200
    assert set(Run.objects.filter(pk__in=queued).values_list("state", flat=True)) == {"cancelled"}
    event = Event.objects.filter(type="experiment.retracted").get()
    assert event.payload["cancelled_runs"] == queued
    finished = Event.objects.filter(type="run.finished").values_list("payload", flat=True)
    assert sorted(p["run"] for p in finished) == queued
