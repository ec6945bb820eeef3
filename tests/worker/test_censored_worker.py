"""A time to an event that was not reached crosses the real runner (a Celery worker process on
PostgreSQL and Redis) and is stored censored at the budget, never as a value."""

import pytest

from plugins.registry import all_plugins
from registry.reproductions.models import Measurement, Run
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis, pytest.mark.worker]


def _finished(reproduction_id: int) -> bool:
    return not Run.objects.filter(reproduction_id=reproduction_id, state__in=["queued", "running"]).exists()


def test_not_reached_is_stored_censored_by_the_worker(celery_worker, api):
    # grokking's tiny preset memorises the training set within ~60 steps but, at 100 steps, never
    # reaches 99% test accuracy: steps_to_train_99 is a value, steps_to_test_99 is not reached.
    params = {**all_plugins()["grokking"].experiment.presets["tiny"], "steps": 100, "eval_every": 10}
    finding = api.post("/api/v1/findings/", {"title": "Grokking, short", "kind": "observation"}, format="json").json()
    response = api.post(
        f"/api/v1/findings/{finding['id']}/experiments/",
        {"plugin": "grokking", "params": params, "default_seeds": 1}, format="json",
    )
    assert response.status_code == 201, response.json()
    reproduction_id = response.json()["reproductions"][0]
    wait_for(lambda: _finished(reproduction_id), timeout=120)
    run = Run.objects.get(reproduction_id=reproduction_id)
    assert run.state == "succeeded", (run.error, celery_worker.output()[-2000:])
    stored = {(m.arm, m.metric): (m.value, m.censored, m.metric_version) for m in run.measurements.all()}
    for arm in ("baseline", "intervention"):
        assert stored[arm, "steps_to_test_99"] == (100.0, True, 2)
        value, censored, version = stored[arm, "steps_to_train_99"]
        assert not censored and 0 < value <= 100 and version == 2
        assert not stored[arm, "test_accuracy"][1] and not stored[arm, "fourier_sparsity"][1]
    assert Measurement.objects.filter(run=run, censored=True).count() == 2
    body = api.get(f"/api/v1/runs/{run.pk}/").json()
    shown = {(m["arm"], m["metric"]): (m["value"], m["censored"]) for m in body["measurements"]}
    assert shown["baseline", "steps_to_test_99"] == (100.0, True)
    assert shown["baseline", "steps_to_train_99"][1] is False
