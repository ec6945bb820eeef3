"""Recovery in seconds, with real workers, a real beat, PostgreSQL and Redis: a killed worker's run
runs again within 30 s, a lost message is re-sent, a worker without a database keeps its
messages, and a duplicate of a healthy run's message changes nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from registry.events.models import Event
from registry.reproductions import services
from registry.reproductions.models import Measurement, Run
from tests.conftest import ROOT, WorkerProcess, wait_for
from tests.factories import FindingFactory
from worker import broker
from worker.celery import app

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis, pytest.mark.worker]


def _experiment(user, params=None, **kwargs):
    finding = FindingFactory(created_by=user)
    return services.experiment_create(
        finding=finding, user=user, plugin="echo", params=params or {}, reproduce=False, **kwargs
    )


def _run(pk: int) -> Run:
    return Run.objects.get(pk=pk)


class Beat:
    """A real ``celery beat`` process (the reaper's trigger)."""

    def __init__(self, env: dict[str, str]):
        self.log_path = settings.VAR_DIR / f"beat-{time.time_ns()}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "beat", "--loglevel", "INFO",
             "-s", str(settings.VAR_DIR / f"beat-{time.time_ns()}.schedule")],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def test_a_killed_worker_s_run_is_retried_within_30_s(worker_env, user):
    """SIGKILL the whole worker mid-run; with the default heartbeat timeout and reaper interval a
    second worker (and a real beat) finishes the run, once, within 30 s of the death."""
    env = {k: v for k, v in worker_env.items() if k not in ("RUN_HEARTBEAT_INTERVAL_S",)}
    experiment = _experiment(user, params={"sleep_s": 6.0}, device="gpu")
    run = services.reproduction_request(experiment=experiment, user=user, seeds=[5]).runs.get()
    victim = WorkerProcess(env, queues="gpu", concurrency=1)
    try:
        wait_for(lambda: _run(run.pk).progress > 0, timeout=60)
        victim.kill()
        died = timezone.now()
    finally:
        victim.stop()
    assert _run(run.pk).state == "running"
    beat = Beat(env)
    rescuer = WorkerProcess(env, queues="gpu,maintenance", concurrency=2)
    try:
        wait_for(lambda: _run(run.pk).state == "succeeded", timeout=60)
    finally:
        rescuer.stop()
        beat.stop()
    run.refresh_from_db()
    retried_after = (run.started_at - died).total_seconds()
    print(f"\nkilled worker's run retried {retried_after:.1f} s after the death; "
          f"finished {(run.finished_at - died).total_seconds():.1f} s after it")
    assert retried_after < 30, retried_after
    assert (run.finished_at - died).total_seconds() < 40
    assert run.attempts == 2
    assert Measurement.objects.filter(run=run).count() == 6
    assert Event.objects.filter(type="run.finished", payload__run=run.pk).count() == 1


def test_a_killed_worker_is_noticed_by_its_liveness_lock_before_the_heartbeat_timeout(worker_env, user):
    """SIGKILL the worker: PostgreSQL releases its run's liveness lock with its connections, and the
    reaper requeues the run once the heartbeat is RUN_DEAD_AFTER_S late (not RUN_HEARTBEAT_TIMEOUT_S)."""
    dead_after, timeout = settings.RUN_DEAD_AFTER_S, settings.RUN_HEARTBEAT_TIMEOUT_S
    assert dead_after + 3 < timeout
    experiment = _experiment(user, params={"sleep_s": 30.0}, device="gpu")
    run = services.reproduction_request(experiment=experiment, user=user, seeds=[8]).runs.get()
    victim = WorkerProcess(worker_env, queues="gpu", concurrency=1)
    try:
        wait_for(lambda: _run(run.pk).progress > 0, timeout=60)
        # alive: a reaper pass with the heartbeat made late on purpose leaves it (the lock is held)
        assert services.runs_reap(now=timezone.now() + timedelta(seconds=dead_after + 1))["requeued"] == 0
        victim.kill()
        died = time.monotonic()
    finally:
        victim.stop()
    counts: dict[str, int] = {}

    def requeued() -> bool:
        counts.update(services.runs_reap())
        return counts["requeued"] == 1

    wait_for(requeued, timeout=timeout + 10, interval=0.5)
    noticed_after = time.monotonic() - died
    print(f"\nkilled worker's run requeued {noticed_after:.1f} s after the death (heartbeat timeout {timeout} s)")
    assert counts["dead_by_liveness"] == 1
    assert noticed_after < dead_after + 3, noticed_after
    run.refresh_from_db()
    assert run.state == "queued" and run.attempts == 1


def test_a_duplicate_message_for_a_healthy_running_run_is_skipped(celery_worker, user):
    experiment = _experiment(user, params={"sleep_s": 3.0})
    run = services.reproduction_request(experiment=experiment, user=user, seeds=[1]).runs.get()
    wait_for(lambda: _run(run.pk).progress > 0, timeout=60)
    before = celery_worker.output().count("skipped: the run is not queued")
    app.send_task("worker.run_execute", args=[run.pk], queue="cpu")
    wait_for(lambda: celery_worker.output().count("skipped: the run is not queued") > before, timeout=30)
    wait_for(lambda: _run(run.pk).state == "succeeded", timeout=60)
    run.refresh_from_db()
    assert run.attempts == 1
    assert Measurement.objects.filter(run=run).count() == 6
    assert Event.objects.filter(type="run.finished", payload__run=run.pk).count() == 1


def test_a_stale_running_run_is_taken_over_by_its_redelivered_message_once(user):
    # queued for a GPU: the session's CPU worker (alive from earlier tests) never consumes it
    run = services.reproduction_request(experiment=_experiment(user), user=user, seeds=[2], device="gpu").runs.get()
    old = services.run_claim(run_id=run.pk, worker_host="dead")
    assert old is not None
    assert services.run_claim(run_id=run.pk, worker_host="dup") is None  # healthy: a duplicate
    Run.objects.filter(pk=run.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT_S + 1)
    )
    new = services.run_claim(run_id=run.pk, worker_host="rescuer")
    assert new is not None and new != old
    assert services.run_claim(run_id=run.pk, worker_host="third") is None  # one takeover only
    assert services.run_heartbeat(run_id=run.pk, token=old) is None  # the old worker is fenced off
    assert not services.run_fail(run_id=run.pk, token=old, error="late")
    run.refresh_from_db()
    assert run.state == "running" and run.attempts == 2 and run.worker_host == "rescuer"


def test_after_a_database_outage_a_redelivered_message_waits_for_the_heartbeat(user):
    """The beat is alive but the reaper could not pass for a minute (the database was down): a run
    whose worker was alive before the outage keeps it until its next heartbeat is due."""
    run = services.reproduction_request(experiment=_experiment(user), user=user, seeds=[4], device="gpu").runs.get()
    assert services.run_claim(run_id=run.pk, worker_host="alive") is not None
    now = time.time()
    broker.reaper_clock_save({"last_success": now - 60})
    broker.beat_record(now - 1)
    try:
        Run.objects.filter(pk=run.pk).update(
            heartbeat_at=timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT_S + 20)
        )
        assert services.run_claim(run_id=run.pk, worker_host="rescuer") is None
        broker.reaper_clock_clear()
        assert services.run_claim(run_id=run.pk, worker_host="rescuer") is not None
    finally:
        broker.reaper_clock_clear()
        broker.redis_client().delete(f"{settings.CELERY_BROKER_KEY_PREFIX}{broker.BEAT_KEY}")
    assert _run(run.pk).worker_host == "rescuer"


def test_a_lost_message_is_resent_and_a_waiting_one_is_not(user, settings):
    settings.RUN_REDISPATCH_AFTER_S = 1.0
    run = services.reproduction_request(experiment=_experiment(user), user=user, seeds=[3], device="gpu").runs.get()
    assert _run(run.pk).dispatched_at is not None
    assert broker.run_messages_present([(run.pk, "gpu")], delivered_within_s=1) == {run.pk}
    time.sleep(1.2)
    assert services.runs_reap()["redispatched"] == 0  # still waiting in its queue: no duplicate
    _empty_queue("gpu")  # a broker restart
    assert broker.run_messages_present([(run.pk, "gpu")], delivered_within_s=1) == set()
    assert services.runs_reap()["redispatched"] == 1
    assert broker.run_messages_present([(run.pk, "gpu")], delivered_within_s=1) == {run.pk}
    assert services.runs_reap()["redispatched"] == 0  # just sent
    _empty_queue("gpu")


def test_a_dead_workers_run_is_resent_ahead_of_a_broker_restarts_resends(user, settings):
    """After a broker restart the reaper re-sends every queued run; a run whose worker died goes
    ahead of them all (in the soak, such runs waited behind 549 re-sends for ~90 s)."""
    settings.RUN_REDISPATCH_AFTER_S = 0.5
    _empty_queue("gpu")
    experiment = _experiment(user)
    lost = services.reproduction_request(experiment=experiment, user=user, seeds=[5], device="gpu").runs.get()
    dead = services.reproduction_request(experiment=experiment, user=user, seeds=[6], device="gpu").runs.get()
    assert services.run_claim(run_id=dead.pk, worker_host="dead") is not None
    Run.objects.filter(pk=dead.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT_S + 1)
    )
    _empty_queue("gpu")  # a broker restart: both messages gone
    time.sleep(0.6)
    counts = services.runs_reap()
    assert counts["requeued"] == 1 and counts["redispatched"] == 2
    front, resent, new, _ = (broker.redis_client().lrange(key, 0, -1) for key in broker._queue_keys("gpu"))
    assert [m for m in front if broker._marker(dead.pk) in m] and not [m for m in front if broker._marker(lost.pk) in m]
    assert [m for m in resent if broker._marker(lost.pk) in m] and not new
    _empty_queue("gpu")


def _empty_queue(queue: str) -> None:
    broker.redis_client().delete(*broker._queue_keys(queue))


def _queued_task_ids(queue: str) -> list[str]:
    """The task ids waiting in ``queue``, in the order a worker would receive them."""
    import json

    client = broker.redis_client()
    ids = []
    for key in broker._queue_keys(queue):  # kombu serves the priority lists in this order
        for message in reversed(client.lrange(key, 0, -1)):  # LPUSH, BRPOP: the oldest is last
            ids.append(json.loads(message)["headers"]["id"])
    return ids


def test_the_reaper_s_resends_go_ahead_of_new_runs(user, settings):
    """A run requeued after its worker died (or whose message was lost) has waited already: it is
    served before the new runs behind which a plain re-send would put it."""
    settings.RUN_REDISPATCH_AFTER_S = 1.0
    _empty_queue("gpu")
    experiment = _experiment(user)
    request = services.reproduction_request(experiment=experiment, user=user, seeds=[1, 2], device="gpu")
    waiting = list(request.runs.all())
    lost = services.reproduction_request(experiment=experiment, user=user, seeds=[3], device="gpu").runs.get()
    keys = broker._queue_keys("gpu")
    mine = [m for m in broker.redis_client().lrange(keys[2], 0, -1) if f'"run-{lost.pk}-'.encode() in m]
    broker.redis_client().lrem(keys[2], 0, mine[0])  # its message lost
    Run.objects.filter(pk=lost.pk).update(dispatched_at=timezone.now() - timedelta(seconds=5))
    assert services.runs_reap()["redispatched"] == 1
    order = [task_id.split("-")[1] for task_id in _queued_task_ids("gpu")]
    assert order == [str(lost.pk)] + [str(run.pk) for run in sorted(waiting, key=lambda r: r.pk)]
    _empty_queue("gpu")


def test_a_worker_without_its_database_keeps_the_message(worker_env, user):
    """A worker that cannot reach the database retries the message instead of acknowledging and
    dropping it; once a worker with a database gets it the run succeeds (no reaper involved)."""
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    bad_url = worker_env["DATABASE_URL"].replace(
        worker_env["DATABASE_URL"].split("@", 1)[1].split("/", 1)[0], f"127.0.0.1:{port}"
    )
    run = services.reproduction_request(experiment=_experiment(user), user=user, seeds=[4], device="gpu").runs.get()
    cut_off = WorkerProcess({**worker_env, "DATABASE_URL": bad_url, "RUN_DB_RETRY_S": "1"}, queues="gpu",
                            concurrency=1)
    try:
        wait_for(lambda: cut_off.output().count("the database is unreachable") >= 2, timeout=60)
    finally:
        cut_off.stop()  # a warm shutdown gives its unacknowledged (retried) message back
    assert _run(run.pk).state == "queued"
    healthy = WorkerProcess(worker_env, queues="gpu", concurrency=1)
    try:
        wait_for(lambda: _run(run.pk).state == "succeeded", timeout=60)
    finally:
        healthy.stop()
    assert _run(run.pk).attempts == 1
