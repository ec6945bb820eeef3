"""A real Celery worker on real Redis and PostgreSQL runs the fast echo plugin."""

import pytest

from registry.events.models import Event
from registry.reproductions.models import Measurement, Run
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis, pytest.mark.worker]


def _finished(reproduction_id: int) -> bool:
    return not Run.objects.filter(reproduction_id=reproduction_id, state__in=["queued", "running"]).exists()


def test_echo_reproduction_through_the_worker(celery_worker, api):
    finding = api.post("/api/v1/findings/", {"title": "Echo", "kind": "fix"}, format="json").json()
    response = api.post(
        f"/api/v1/findings/{finding['id']}/experiments/",
        {"plugin": "echo", "params": {"effect": -0.25}, "default_seeds": 3},
        format="json",
    )
    assert response.status_code == 201, response.json()
    reproduction_id = response.json()["reproductions"][0]
    wait_for(lambda: _finished(reproduction_id), timeout=60)
    runs = Run.objects.filter(reproduction_id=reproduction_id)
    assert sorted(r.state for r in runs) == ["succeeded"] * 3, celery_worker.output()[-3000:]
    for run in runs:
        values = {(m.arm, m.metric): m.value for m in run.measurements.all()}
        assert values[("intervention", "risk")] == pytest.approx(values[("baseline", "risk")] - 0.25)
        assert run.attempts == 1
        assert run.environment["torch"]
        assert run.environment["torch_threads"] == 1  # RUN_TORCH_THREADS, set by the runner
        assert run.hardware == "cpu"
        assert run.artifacts.get().name == "values.json"
    assert Measurement.objects.filter(run__reproduction_id=reproduction_id).count() == 3 * 2 * 3
    types = list(Event.objects.filter(finding_id=finding["id"]).values_list("type", flat=True))
    assert types.count("run.started") == 3 and types.count("run.finished") == 3
    body = api.get(f"/api/v1/reproductions/{reproduction_id}/").json()
    assert body["state"] == "finished"
