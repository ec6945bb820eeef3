"""Failure modes with a real worker: duplicates, crashes, cancellation, time limits, a worker
killed mid-run, lost messages. No run may be lost, stuck or scored twice."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from registry.events.models import Event
from registry.reproductions import services
from registry.reproductions.models import Measurement, Run, WorkerPresence
from tests.conftest import WorkerProcess, wait_for
from tests.factories import FindingFactory
from worker.celery import app

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis, pytest.mark.worker]


def _experiment(user, plugin="echo", params=None, **kwargs):
    finding = FindingFactory(created_by=user)
    return services.experiment_create(
        finding=finding, user=user, plugin=plugin, params=params or {}, reproduce=False, **kwargs
    )


def _state(run_id: int) -> str:
    return Run.objects.get(pk=run_id).state


def test_a_duplicate_message_does_not_score_twice(celery_worker, user):
    experiment = _experiment(user, params={"sleep_s": 1.0})
    reproduction = services.reproduction_request(experiment=experiment, user=user, seeds=[1])
    run = reproduction.runs.get()
    app.send_task("worker.run_execute", args=[run.pk], queue="cpu")
    app.send_task("worker.run_execute", args=[run.pk], queue="cpu")
    wait_for(lambda: _state(run.pk) == "succeeded", timeout=60)
    # let the duplicates be consumed too
    wait_for(lambda: celery_worker.output().count("skipped: the run is not queued") >= 2, timeout=30)
    run.refresh_from_db()
    assert run.attempts == 1
    assert Measurement.objects.filter(run=run).count() == 6
    assert Event.objects.filter(type="run.finished", payload__run=run.pk).count() == 1


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("value", "ValueError: the plugin broke"),
        ("undeclared", "undeclared metrics ['other']"),
        ("nan", "is not finite"),
        ("exit", "SystemExit"),
    ],
)
def test_a_failing_plugin_is_recorded_as_failed(celery_worker, user, kind, expected):
    experiment = _experiment(user, plugin="crashing", params={"kind": kind})
    reproduction = services.reproduction_request(experiment=experiment, user=user, seeds=[0])
    run = reproduction.runs.get()
    wait_for(lambda: _state(run.pk) not in ("queued", "running"), timeout=60)
    run.refresh_from_db()
    assert run.state == "failed", celery_worker.output()[-2000:]
    assert expected in run.error
    assert "Traceback" in run.traceback
    assert not run.measurements.exists()
    assert run.finished_at is not None


def test_cancelling_a_running_run_stops_it(celery_worker, user, client_for):
    experiment = _experiment(user, params={"sleep_s": 60})
    reproduction = services.reproduction_request(experiment=experiment, user=user, seeds=[0])
    run = reproduction.runs.get()
    wait_for(lambda: Run.objects.get(pk=run.pk).progress > 0, timeout=60)
    response = client_for(user).post(f"/api/v1/runs/{run.pk}/cancel/")
    assert response.status_code == 200, response.json()
    wait_for(lambda: "stopped: the run was cancelled" in celery_worker.output(), timeout=30)
    run.refresh_from_db()
    assert run.state == "cancelled"
    assert not run.measurements.exists()


def test_soft_time_limit_records_timed_out(celery_worker, user):
    experiment = _experiment(user, params={"sleep_s": 30}, time_limit_s=2)
    reproduction = services.reproduction_request(experiment=experiment, user=user, seeds=[0])
    run = reproduction.runs.get()
    wait_for(lambda: _state(run.pk) not in ("queued", "running"), timeout=60)
    run.refresh_from_db()
    assert run.state == "timed_out", (run.error, celery_worker.output()[-2000:])
    # the worker enforces the limit itself (Celery's limits are a backstop): echo stops when asked
    # stopped when asked, or (on a loaded machine, past half the grace) by SIGTERM: both are the limit
    assert run.error.startswith("exceeded the time limit of 2 s; "), run.error


def test_a_lost_message_is_redispatched_by_the_reaper(celery_worker, user):
    experiment = _experiment(user)
    # a run that reached the database but never the broker (dispatch failed after commit)
    reproduction = services.reproduction_request(experiment=experiment, user=user, seeds=[3])
    run = reproduction.runs.get()
    wait_for(lambda: _state(run.pk) == "succeeded", timeout=60)
    orphan = Run.objects.create(reproduction=reproduction, seed=4, queue="cpu")
    # (after RUN_DISPATCH_GRACE_S: until then its creator may still be sending it)
    counts = services.runs_reap(now=timezone.now() + timedelta(seconds=settings.RUN_DISPATCH_GRACE_S + 1))
    assert counts["redispatched"] == 1
    wait_for(lambda: _state(orphan.pk) == "succeeded", timeout=60)


def test_a_killed_worker_loses_nothing_and_scores_once(worker_env, user):
    """SIGKILL a worker mid-run: the reaper requeues the run, another worker finishes it, once."""
    experiment = _experiment(user, params={"sleep_s": 4.0}, device="gpu")
    reproduction = services.reproduction_request(experiment=experiment, user=user, seeds=[7])
    run = reproduction.runs.get()
    assert services.reproduction_waiting_for_gpu(reproduction)  # no worker consumes 'gpu' yet
    victim = WorkerProcess(worker_env, queues="gpu", concurrency=1)
    try:
        wait_for(lambda: Run.objects.get(pk=run.pk).progress > 0, timeout=60)
        wait_for(lambda: WorkerPresence.objects.filter(queues__contains=["gpu"]).exists(), timeout=30)
        assert not services.reproduction_waiting_for_gpu(reproduction)
        victim.kill()
    finally:
        victim.stop()
    run.refresh_from_db()
    assert run.state == "running" and run.attempts == 1
    later = timezone.now() + timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT_S + 5)  # heartbeat stale
    assert services.runs_reap(now=later)["requeued"] == 1
    assert _state(run.pk) == "queued"
    rescuer = WorkerProcess(worker_env, queues="gpu", concurrency=1)
    try:
        services.runs_reap()  # the requeued run is dispatched again
        wait_for(lambda: _state(run.pk) == "succeeded", timeout=90)
    finally:
        rescuer.stop()
    run.refresh_from_db()
    assert run.attempts == 2
    assert Measurement.objects.filter(run=run).count() == 6
    assert Event.objects.filter(type="run.requeued", payload__run=run.pk).count() == 1
    assert Event.objects.filter(type="run.finished", payload__run=run.pk).count() == 1
