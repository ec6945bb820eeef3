"""Experiments, reproductions, runs and cancelling through the API (runs are created, not dispatched)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from registry.events.models import Event
from registry.reproductions.models import Experiment, Measurement, Reproduction, Run
from tests.api.helpers import FINDINGS, assert_error, counts, event_types

pytestmark = pytest.mark.django_db


def experiments_url(finding_id: int) -> str:
    return f"{FINDINGS}{finding_id}/experiments/"


def test_create_experiment_queues_the_first_reproduction(api, user, finding):
    response = api.post(
        experiments_url(finding.pk), {"plugin": "echo", "params": {"effect": -0.25}, "default_seeds": 4},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["plugin"] == "echo"
    assert body["finding"] == finding.pk
    # normalised: every parameter present, defaults filled in
    assert body["params"] == {"baseline": 1.0, "effect": -0.25, "noise": 0.0, "sleep_s": 0.0}
    assert body["default_seeds"] == 4
    assert body["device"] == "cpu" and body["time_limit_s"] == 120  # from the plugin's resources
    assert "reproduce" not in body
    assert len(body["reproductions"]) == 1

    experiment = Experiment.objects.get(pk=body["id"])
    assert experiment.created_by == user
    reproduction = Reproduction.objects.get(pk=body["reproductions"][0])
    assert reproduction.experiment == experiment and reproduction.requested_by == user
    assert reproduction.seeds == [0, 1, 2, 3]
    runs = list(reproduction.runs.order_by("seed"))
    assert [r.seed for r in runs] == [0, 1, 2, 3]
    assert {r.state for r in runs} == {"queued"}
    assert {r.queue for r in runs} == {"cpu"}
    assert event_types(finding.pk)[-2:] == ["experiment.created", "reproduction.requested"]

    listed = api.get(experiments_url(finding.pk)).json()
    assert [e["id"] for e in listed] == [experiment.pk]
    assert api.get(f"{FINDINGS}{finding.pk}/").json()["experiments"][0]["plugin"] == "echo"
    assert api.get(f"/api/v1/experiments/{experiment.pk}/").json()["params"] == body["params"]


def test_params_given_as_strings_are_normalised_to_numbers(api, finding):
    response = api.post(experiments_url(finding.pk), {"plugin": "echo", "params": {"baseline": "2"},
                                                      "reproduce": False}, format="json")
    assert response.status_code == 201
    assert Experiment.objects.get(pk=response.json()["id"]).params["baseline"] == 2.0


def test_reproduce_false_creates_no_reproduction(api, finding):
    response = api.post(experiments_url(finding.pk), {"plugin": "echo", "reproduce": False}, format="json")
    assert response.status_code == 201
    assert response.json()["reproductions"] == []
    assert not Reproduction.objects.exists() and not Run.objects.exists()
    assert "reproduction.requested" not in event_types(finding.pk)


def test_device_and_time_limit_can_be_chosen(api, finding):
    response = api.post(experiments_url(finding.pk), {"plugin": "echo", "device": "gpu", "time_limit_s": 60,
                                                      "default_seeds": 1}, format="json")
    assert response.status_code == 201
    run = Run.objects.get(reproduction__experiment_id=response.json()["id"])
    assert run.queue == "gpu"
    assert Experiment.objects.get(pk=response.json()["id"]).time_limit_s == 60


def test_only_authors_may_add_experiments(client_for, other_user, anon, finding):
    before = counts()
    assert_error(client_for(other_user).post(experiments_url(finding.pk), {"plugin": "echo"}, format="json"), 403)
    response = anon.post(experiments_url(finding.pk), {"plugin": "echo"}, format="json")
    assert response.status_code in (401, 403)
    assert_error(response, response.status_code)
    assert counts() == before


def test_staff_may_add_experiments(client_for, staff_user, finding):
    response = client_for(staff_user).post(experiments_url(finding.pk), {"plugin": "echo", "reproduce": False},
                                           format="json")
    assert response.status_code == 201


# ---------------------------------------------------------------- reproductions


def reproductions_url(experiment_id: int) -> str:
    return f"/api/v1/experiments/{experiment_id}/reproductions/"


def test_request_reproduction_with_seeds(client_for, other_user, experiment):
    # reproducing is open to any account, not only the authors
    client = client_for(other_user)
    response = client.post(reproductions_url(experiment.pk), {"seeds": [5, 6, 7]}, format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["experiment"] == experiment.pk
    assert body["seeds"] == [5, 6, 7]
    assert body["requested_by"] == other_user.username
    assert body["state"] == "queued"
    assert sorted(r["seed"] for r in body["runs"]) == [5, 6, 7]
    assert {r["state"] for r in body["runs"]} == {"queued"}
    reproduction = Reproduction.objects.get(pk=body["id"])
    assert sorted(reproduction.runs.values_list("seed", flat=True)) == [5, 6, 7]
    assert set(reproduction.runs.values_list("state", flat=True)) == {"queued"}
    listed = client.get(reproductions_url(experiment.pk)).json()
    assert body["id"] in [r["id"] for r in listed]


def test_request_reproduction_with_n_seeds(api, experiment):
    response = api.post(reproductions_url(experiment.pk), {"n_seeds": 2}, format="json")
    assert response.status_code == 202
    assert Reproduction.objects.get(pk=response.json()["id"]).runs.count() == 2


def test_request_reproduction_with_default_seeds(api, experiment):
    response = api.post(reproductions_url(experiment.pk), {}, format="json")
    assert response.status_code == 202
    assert len(response.json()["runs"]) == experiment.default_seeds


def test_anonymous_cannot_request_reproductions(anon, experiment):
    before = counts()
    response = anon.post(reproductions_url(experiment.pk), {"seeds": [1]}, format="json")
    assert response.status_code in (401, 403)
    assert_error(response, response.status_code)
    assert counts() == before


def test_unknown_experiment_is_404(api):
    assert_error(api.post(reproductions_url(987654321), {"seeds": [1]}, format="json"), 404)


def test_reproduction_detail_shows_runs_with_state_and_progress(anon, experiment):
    reproduction = experiment.reproductions.get()
    first, second = reproduction.runs.order_by("id")
    Run.objects.filter(pk=first.pk).update(state="running", progress=0.5, progress_message="halfway",
                                           started_at=timezone.now())
    body = anon.get(f"/api/v1/reproductions/{reproduction.pk}/").json()
    assert body["id"] == reproduction.pk and body["finding"] == experiment.finding_id
    assert body["plugin"] == "echo"
    assert body["state"] == "running"
    assert body["waiting_for_gpu_worker"] is False
    runs = {r["id"]: r for r in body["runs"]}
    assert runs[first.pk]["state"] == "running" and runs[first.pk]["progress"] == 0.5
    assert runs[first.pk]["progress_message"] == "halfway"
    assert runs[second.pk]["state"] == "queued" and runs[second.pk]["progress"] == 0.0
    Run.objects.filter(reproduction=reproduction).update(state="succeeded", progress=1.0)
    assert anon.get(f"/api/v1/reproductions/{reproduction.pk}/").json()["state"] == "finished"


def test_run_detail_shape(api, experiment):
    run = Run.objects.filter(reproduction__experiment=experiment).order_by("id").first()
    Measurement.objects.create(run=run, arm="baseline", metric="risk", value=1.0)
    Measurement.objects.create(run=run, arm="intervention", metric="risk", value=0.5)
    response = api.get(f"/api/v1/runs/{run.pk}/")
    assert response.status_code == 200
    body = response.json()
    expected = {
        "id", "reproduction", "experiment", "finding", "plugin", "seed", "state", "queue", "attempts", "progress",
        "progress_message", "heartbeat_at", "started_at", "finished_at", "worker_host", "plugin_version",
        "hardware", "environment", "self_reported", "measurements", "artifacts", "logs", "error", "traceback",
        "created_at",
    }
    assert expected <= set(body)
    assert body["experiment"] == experiment.pk and body["finding"] == experiment.finding_id
    assert body["plugin"] == "echo" and body["state"] == "queued" and body["self_reported"] is False
    assert sorted((m["arm"], m["metric"], m["value"]) for m in body["measurements"]) == [
        ("baseline", "risk", 1.0), ("intervention", "risk", 0.5)
    ]
    assert body["artifacts"] == []
    listed = api.get("/api/v1/runs/", {"reproduction": run.reproduction_id}).json()
    assert listed["count"] == experiment.default_seeds


def test_runs_of_restricted_findings_are_hidden(client_for, make_finding, make_experiment, other_user):
    secret = make_finding(owner=other_user, title="Secret", visibility="restricted")
    experiment = make_experiment(secret, owner=other_user)
    run = Run.objects.filter(reproduction__experiment=experiment).first()
    stranger = client_for(None)
    assert_error(stranger.get(f"/api/v1/runs/{run.pk}/"), 404)
    assert_error(stranger.get(f"/api/v1/reproductions/{run.reproduction_id}/"), 404)
    assert_error(stranger.get(f"/api/v1/experiments/{experiment.pk}/"), 404)
    assert run.pk not in [r["id"] for r in stranger.get("/api/v1/runs/").json()["results"]]
    assert client_for(other_user).get(f"/api/v1/runs/{run.pk}/").status_code == 200


# ---------------------------------------------------------------- cancelling


def test_cancel_a_queued_run(api, experiment):
    run = Run.objects.filter(reproduction__experiment=experiment).first()
    before = Event.objects.count()
    response = api.post(f"/api/v1/runs/{run.pk}/cancel/")
    assert response.status_code == 200, response.json()
    assert response.json()["state"] == "cancelled"
    run.refresh_from_db()
    assert run.state == "cancelled" and run.finished_at is not None
    new_events = list(Event.objects.filter(id__gt=0).order_by("id"))[before:]
    assert [e.type for e in new_events] == ["run.finished"]
    assert new_events[0].payload["run"] == run.pk and new_events[0].payload["state"] == "cancelled"


def test_a_reproduction_says_how_it_ended(api, experiment):
    """state is queued / running / finished; outcome tells an all-cancelled or all-failed one apart."""
    reproduction = experiment.reproductions.get()
    runs = list(reproduction.runs.order_by("pk"))
    assert len(runs) >= 2

    def read() -> dict:
        response = api.get(f"/api/v1/reproductions/{reproduction.pk}/")
        assert response.status_code == 200
        return response.json()

    assert (read()["state"], read()["outcome"]) == ("queued", None)
    for run in runs:
        assert api.post(f"/api/v1/runs/{run.pk}/cancel/").status_code == 200
    assert (read()["state"], read()["outcome"]) == ("finished", "cancelled")
    Run.objects.filter(pk=runs[0].pk).update(state="failed")
    assert read()["outcome"] == "failed"
    Run.objects.filter(pk=runs[1].pk).update(state="succeeded")
    assert read()["outcome"] == "succeeded"
    Run.objects.filter(pk=runs[0].pk).update(state="running")
    assert (read()["state"], read()["outcome"]) == ("running", None)


def test_cancel_a_terminal_run_is_409(api, experiment):
    run = Run.objects.filter(reproduction__experiment=experiment).first()
    assert api.post(f"/api/v1/runs/{run.pk}/cancel/").status_code == 200
    before = counts()
    assert_error(api.post(f"/api/v1/runs/{run.pk}/cancel/"), 409)
    Run.objects.filter(pk=run.pk).update(state="succeeded")
    assert_error(api.post(f"/api/v1/runs/{run.pk}/cancel/"), 409)
    assert Run.objects.get(pk=run.pk).state == "succeeded"
    assert counts() == before


def test_cancel_by_a_stranger_is_refused(client_for, anon, experiment):
    run = Run.objects.filter(reproduction__experiment=experiment).first()
    from tests.factories import UserFactory

    assert_error(client_for(UserFactory()).post(f"/api/v1/runs/{run.pk}/cancel/"), 403)
    response = anon.post(f"/api/v1/runs/{run.pk}/cancel/")
    assert response.status_code in (401, 403)
    assert Run.objects.get(pk=run.pk).state == "queued"


def test_whoever_requested_a_reproduction_may_cancel_its_runs(client_for, other_user, experiment):
    client = client_for(other_user)
    reproduction_id = client.post(reproductions_url(experiment.pk), {"seeds": [9]}, format="json").json()["id"]
    run = Run.objects.get(reproduction_id=reproduction_id)
    assert client.post(f"/api/v1/runs/{run.pk}/cancel/").status_code == 200
    assert Run.objects.get(pk=run.pk).state == "cancelled"


def test_related_id_filters_do_not_reveal_hidden_rows(anon):
    for path in ("/api/v1/experiments/?finding=999999", "/api/v1/reproductions/?experiment=999999",
                 "/api/v1/runs/?reproduction=999999"):
        response = anon.get(path)
        assert response.status_code == 200 and response.json()["results"] == []
    assert anon.get("/api/v1/runs/?reproduction=abc").status_code == 400


def test_worker_host_names_are_for_signed_in_users(anon, api, experiment):
    from registry.reproductions.models import Run

    run = Run.objects.filter(reproduction__experiment=experiment).first()
    Run.objects.filter(pk=run.pk).update(worker_host="gpu-17.internal:42", environment={"hostname": "gpu-17"})
    public = anon.get(f"/api/v1/runs/{run.pk}/").json()
    assert "worker_host" not in public and "hostname" not in public["environment"]
    private = api.get(f"/api/v1/runs/{run.pk}/").json()
    assert private["worker_host"] == "gpu-17.internal:42" and private["environment"]["hostname"] == "gpu-17"


def test_an_experiment_carries_its_label(api, anon, finding):
    response = api.post(experiments_url(finding.pk), {"plugin": "echo", "reproduce": False,
                                                      "label": "  noisier setting "}, format="json")
    assert response.status_code == 201, response.json()
    experiment = Experiment.objects.get(pk=response.json()["id"])
    assert experiment.label == "noisier setting"
    assert anon.get(f"/api/v1/experiments/{experiment.pk}/").json()["label"] == "noisier setting"
    assert anon.get(f"{FINDINGS}{finding.pk}/").json()["experiments"][0]["label"] == "noisier setting"
    before = Experiment.objects.count()
    too_long = api.post(experiments_url(finding.pk), {"plugin": "echo", "reproduce": False, "label": "x" * 201},
                        format="json")
    assert too_long.status_code == 400 and "label" in too_long.json()["errors"], too_long.json()
    assert Experiment.objects.count() == before
