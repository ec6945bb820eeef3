"""Self-reported runs in batches (POST /api/v1/experiments/{id}/self-reported-runs/batch/): all or
nothing, errors naming the run and its field, one event per run as the single-run endpoint writes
it, one effects recompute, Idempotency-Key, quotas and the batch limits."""

from __future__ import annotations

import json

import pytest

from registry.effects import services as effects_services
from registry.effects.models import FindingEffects
from registry.events.models import Event
from registry.reproductions.models import Measurement, Reproduction, Run
from tests.effects.builders import RISK_DOWN, claim, echo_params, experiment_for, recompute_as_the_worker
from tests.factories import FindingFactory

pytestmark = pytest.mark.django_db

HARDWARE = "NVIDIA A100-SXM4-80GB"


def _run(seed: int, risk: tuple[float, float] = (1.0, 0.5), **extra) -> dict:
    return {
        "seed": seed,
        "measurements": {
            "baseline": {"risk": risk[0], "skill": 1.0, "width": 3.0},
            "intervention": {"risk": risk[1], "skill": 1.0, "width": 3.0},
        },
        **extra,
    }


def _batch(runs: list[dict], **overrides) -> dict:
    return {"params": echo_params(), "hardware": HARDWARE, "environment": {"torch": "2.4.0"}, "runs": runs,
            **overrides}


@pytest.fixture
def experiment(user):
    return experiment_for(FindingFactory(created_by=user, kind="fix"))


@pytest.fixture
def url(experiment) -> str:
    return f"/api/v1/experiments/{experiment.pk}/self-reported-runs/batch/"


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    """Recompute messages sent to the broker (recorded instead of sent)."""
    messages: list[int] = []
    monkeypatch.setattr(effects_services, "effects_recompute_enqueue",
                        lambda finding_id, **options: messages.append(finding_id))
    return messages


def _nothing_stored() -> None:
    assert not Reproduction.objects.exists()
    assert not Run.objects.exists()
    assert not Measurement.objects.exists()
    assert not Event.objects.filter(type="run.finished").exists()


def test_a_batch_is_stored_in_bulk_with_one_event_per_run_and_one_recompute(
    api, user, experiment, url, sent, django_capture_on_commit_callbacks
):
    c = claim(experiment.finding, "risk", "decrease", min_relative_effect=0.3)
    runs = [_run(seed, risk) for seed, risk in enumerate(RISK_DOWN[:5])]
    runs[4]["hardware"] = "cpu"  # a run's own field wins over the batch's
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(url, _batch(runs), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["experiment"] == experiment.pk and body["measurements"] == 30
    assert len(body["runs"]) == 5 and len(body["reproductions"]) == 2  # one per device (GPU, CPU)
    stored = list(Run.objects.filter(pk__in=body["runs"]).order_by("seed"))
    assert [r.pk for r in stored] == body["runs"]  # the ids come back in the request's order
    assert [r.seed for r in stored] == [0, 1, 2, 3, 4]
    assert {r.state for r in stored} == {"succeeded"}
    assert [r.hardware for r in stored] == [HARDWARE] * 4 + ["cpu"]
    assert stored[0].environment == {"torch": "2.4.0"} and stored[0].plugin_version == "1.0.0"
    reproductions = Reproduction.objects.filter(pk__in=body["reproductions"]).order_by("device")
    assert [(r.device, r.source, r.requested_by, r.seeds) for r in reproductions] == [
        ("cpu", "self_reported", user, [4]), ("gpu", "self_reported", user, [0, 1, 2, 3])
    ]
    assert Measurement.objects.filter(run__in=stored).count() == 30
    assert Measurement.objects.get(run=stored[1], arm="intervention", metric="risk").value == RISK_DOWN[1][1]
    # one run.finished per run, shaped as the single-run endpoint writes it
    events = list(Event.objects.filter(type="run.finished").order_by("id"))
    assert [e.payload["run"] for e in events] == body["runs"]
    assert events[0].finding_id == experiment.finding_id and events[0].plugin == "echo"
    assert events[0].payload == {
        "run": stored[0].pk, "reproduction": stored[0].reproduction_id, "experiment": experiment.pk,
        "finding": experiment.finding_id, "seed": 0, "state": "succeeded", "attempt": 1, "measurements": 6,
        "self_reported": True, "hardware": HARDWARE,
    }
    # one recompute request, enqueued once
    assert sent == [experiment.finding_id]
    assert FindingEffects.objects.get(finding=experiment.finding).pending
    recompute_as_the_worker(experiment.finding_id)
    effects = api.get(f"/api/v1/findings/{experiment.finding_id}/effects/").json()
    assert effects["claims"][0]["claim"] == c.pk
    assert (effects["claims"][0]["verdict"], effects["claims"][0]["evidence"]) == ("confirmed", "self_reported")
    assert effects["n_runs"] == 5


def test_the_single_run_endpoint_writes_the_same_event(api, experiment):
    single = {**_run(9), "params": echo_params(), "hardware": HARDWARE}
    response = api.post(f"/api/v1/experiments/{experiment.pk}/self-reported-runs/", single, format="json")
    assert response.status_code == 201, response.json()
    event = Event.objects.get(type="run.finished")
    assert set(event.payload) == {
        "run", "reproduction", "experiment", "finding", "seed", "state", "attempt", "measurements",
        "self_reported", "hardware",
    }
    assert event.payload["run"] == response.json()["id"] and event.payload["measurements"] == 6


@pytest.mark.parametrize(
    ("index", "change", "field"),
    [
        (3, {"measurements": {"baseline": {"risk": "high", "skill": 1, "width": 3},
                              "intervention": {"risk": 1, "skill": 1, "width": 3}}},
         "runs[3].measurements.baseline.risk"),
        (1, {"measurements": {"baseline": {"risk": 1, "skill": 1, "width": 3}}}, "runs[1].measurements"),
        (2, {"seed": -1}, "runs[2].seed"),
        (0, {"seed": "one"}, "runs[0].seed"),
        (4, {"hardware": ""}, "runs[4].hardware"),
        (1, {"params": {"noise": -1}}, "runs[1].params.noise"),
        (2, {"params": {"effect": -0.1}}, "runs[2].params"),
        (3, {"environment": ["not", "an", "object"]}, "runs[3].environment"),
        (0, {"colour": "blue"}, "runs[0].colour"),
    ],
    ids=["not-a-number", "missing-arm", "seed", "seed-type", "hardware", "invalid-param", "other-params",
         "environment", "unknown-field"],
)
def test_one_invalid_run_is_a_400_naming_it_and_nothing_is_written(api, url, index, change, field):
    runs = [_run(seed) for seed in range(5)]
    runs[index].update(change)
    response = api.post(url, _batch(runs), format="json")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert field in body["errors"], body
    assert body["detail"].startswith(f"runs[{index}]")
    _nothing_stored()


def test_a_non_finite_value_names_the_run(api, url):
    raw = json.dumps(_batch([_run(0), _run(1, (1.0, 0.25))])).replace("0.25", "NaN")
    response = api.post(url, raw, content_type="application/json")
    assert response.status_code == 400, response.json()
    assert "runs[1].measurements" in response.json()["errors"]
    _nothing_stored()


@pytest.mark.parametrize(
    ("body", "field"),
    [({"runs": []}, "runs"), ({"runs": "all"}, "runs"), ({}, "runs"), ({"runs": [1]}, "runs[0]"),
     ({"runs": [_run(0)], "colour": "blue"}, "colour")],
    ids=["empty", "not-a-list", "missing", "not-an-object", "unknown-field"],
)
def test_a_malformed_batch_is_a_400_naming_the_field(api, url, body, field):
    response = api.post(url, {"params": echo_params(), "hardware": "cpu", **body}, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"]
    _nothing_stored()


def test_anonymous_is_401(anon, url):
    response = anon.post(url, _batch([_run(0)]), format="json")
    assert response.status_code == 401
    assert response.json()["detail"]
    _nothing_stored()


def test_a_stranger_is_403_on_a_public_finding_and_404_on_a_hidden_one(client_for, other_user, user, url):
    response = client_for(other_user).post(url, _batch([_run(0)]), format="json")
    assert response.status_code == 403 and response.json()["detail"]
    hidden = experiment_for(FindingFactory(created_by=user, visibility="restricted"))
    response = client_for(other_user).post(
        f"/api/v1/experiments/{hidden.pk}/self-reported-runs/batch/", _batch([_run(0)]), format="json"
    )
    assert response.status_code == 404
    # a stranger's invalid batch is refused as a stranger's, before the body is looked at
    response = client_for(other_user).post(url, {"runs": "garbage"}, format="json")
    assert response.status_code == 403
    _nothing_stored()


def test_a_retracted_experiment_takes_no_batch(api, experiment, url):
    from django.utils import timezone

    experiment.retracted_at = timezone.now()
    experiment.save(update_fields=["retracted_at"])
    response = api.post(url, _batch([_run(0)]), format="json")
    assert response.status_code == 400 and "experiment" in response.json()["errors"]
    _nothing_stored()


def test_a_retried_batch_is_replayed_and_stored_once(api, url):
    body = _batch([_run(seed) for seed in range(3)])
    key = "batch-7d3c0e52-2f8a-4b1e-9c6d-0a5b4e3f2d19"
    first = api.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert first.status_code == 201, first.content
    replay = api.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert replay.content == first.content
    assert Run.objects.count() == 3 and Event.objects.filter(type="run.finished").count() == 3
    other = api.post(url, _batch([_run(seed) for seed in range(4)]), format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert other.status_code == 422
    assert Run.objects.count() == 3


def test_more_runs_than_a_batch_holds_is_a_413(api, url, settings):
    settings.SELF_REPORTED_BATCH_MAX_RUNS = 3
    response = api.post(url, _batch([_run(seed) for seed in range(4)]), format="json")
    assert response.status_code == 413, response.json()
    body = response.json()
    assert "runs" in body["errors"] and (body["limit"], body["given"]) == (3, 4)
    _nothing_stored()
    assert api.post(url, _batch([_run(seed) for seed in range(3)]), format="json").status_code == 201


def test_more_measurements_than_a_batch_holds_is_a_413(api, url, settings):
    settings.SELF_REPORTED_BATCH_MAX_MEASUREMENTS = 20
    response = api.post(url, _batch([_run(seed) for seed in range(4)]), format="json")  # 24 values
    assert response.status_code == 413, response.json()
    assert "runs" in response.json()["errors"] and response.json()["limit"] == 20
    _nothing_stored()


def test_a_body_over_the_api_limit_is_a_413_json(api, url, settings):
    settings.API_MAX_BODY_BYTES = 2_000
    response = api.post(url, _batch([_run(seed) for seed in range(40)]), format="json")
    assert response.status_code == 413
    assert response.json()["detail"]
    _nothing_stored()


def test_the_daily_quota_counts_every_run_of_the_batch(api, url, settings):
    settings.QUOTA_RUNS_PER_DAY = 4
    response = api.post(url, _batch([_run(seed) for seed in range(5)]), format="json")
    assert response.status_code == 429, response.json()
    body = response.json()
    assert (body["quota"], body["limit"], body["used"], body["requested"]) == ("runs_per_day", 4, 0, 5)
    assert response["Retry-After"]
    _nothing_stored()
    assert api.post(url, _batch([_run(seed) for seed in range(4)]), format="json").status_code == 201
    response = api.post(url, _batch([_run(9)]), format="json")
    assert response.status_code == 429 and response.json()["used"] == 4
    assert Run.objects.count() == 4


def test_the_openapi_schema_documents_the_batch(anon):
    schema = anon.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/experiments/{id}/self-reported-runs/batch/"]["post"]
    assert {"201", "400", "403", "404", "413"} <= set(operation["responses"])
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    request = schema["components"]["schemas"][ref]
    assert "runs" in request["required"] and request["properties"]["runs"]["type"] == "array"


def _queries(client, url: str, body: dict) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        response = client.post(url, body, format="json")
    assert response.status_code == 201, response.content[:300]
    # no query lists the experiment's reproductions or the finding's runs (the quota's count joins
    # reproductions to runs, by user and day, through the (requested_by, created_at) index)
    for query in ctx.captured_queries:
        sql = query["sql"]
        if sql.startswith("SELECT") and 'FROM "reproductions_reproduction"' in sql:
            assert '"reproductions_reproduction"."id" =' in sql, sql
    return len(ctx.captured_queries)


def test_writes_cost_a_constant_number_of_queries_whatever_the_runs_already_stored(api, experiment, url, sent):
    """Nothing in the write path reads the finding's earlier runs or reproductions (a prefetch of
    every reproduction made each write cost O(runs so far))."""
    single = f"/api/v1/experiments/{experiment.pk}/self-reported-runs/"
    body = {**_run(0), "params": echo_params(), "hardware": "cpu"}
    _queries(api, single, body)  # the first write creates the effects and quota rows
    early = _queries(api, single, {**body, "seed": 1})
    assert api.post(url, _batch([_run(seed) for seed in range(100, 160)]), format="json").status_code == 201
    for seed in range(2, 12):  # reproductions of one run each, as single writes make them
        assert api.post(single, {**body, "seed": seed}, format="json").status_code == 201
    assert _queries(api, single, {**body, "seed": 99}) == early
    # and a batch costs the same number of queries whatever its size
    assert _queries(api, url, _batch([_run(seed) for seed in range(200, 203)])) == _queries(
        api, url, _batch([_run(seed) for seed in range(300, 350)])
    )
