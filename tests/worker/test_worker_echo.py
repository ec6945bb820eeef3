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


def test_the_worker_keeps_its_database_connection_between_runs(celery_worker, api):
    """Celery's Django fixup would close it around every task (a new PostgreSQL backend per run):
    worker/celery.py keeps it (CELERY_DB_REUSE_MAX, CONN_MAX_AGE), so once the runs are over the
    worker's session is still there, idle, and the next runs use the same one."""
    from django.db import connection

    def worker_sessions() -> set[int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'registry-worker' "
                           "AND datname = current_database()")
            return {row[0] for row in cursor.fetchall()}

    finding = api.post("/api/v1/findings/", {"title": "Echo", "kind": "fix"}, format="json").json()
    experiment = api.post(f"/api/v1/findings/{finding['id']}/experiments/",
                          {"plugin": "echo", "default_seeds": 2}, format="json").json()
    wait_for(lambda: _finished(experiment["reproductions"][0]), timeout=60)
    kept = worker_sessions()
    assert kept, celery_worker.output()[-3000:]
    from registry.reproductions.models import Experiment
    from registry.reproductions.services import reproduction_request

    again = Experiment.objects.select_related("finding__created_by").get(pk=experiment["id"])
    reproduction = reproduction_request(experiment=again, user=again.finding.created_by, seeds=[7, 8])
    wait_for(lambda: _finished(reproduction.pk), timeout=60)
    assert kept & worker_sessions()
