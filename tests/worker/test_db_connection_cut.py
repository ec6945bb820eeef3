"""A worker keeps its database connection from task to task (worker/celery.py): when the database
or the network drops it while the worker is idle, the worker's next tasks must reconnect instead
of failing on the dead connection (a soak's outage left the maintenance worker failing every task).

A real worker reaches PostgreSQL through a TCP proxy (tests/worker/tcp_proxy.py) that resets every
connection at once and keeps listening."""

from __future__ import annotations

import re
import uuid

import pytest
from django.conf import settings

from registry.reproductions import services
from registry.reproductions.models import Run
from tests.conftest import WorkerProcess, wait_for
from tests.factories import FindingFactory
from tests.worker.tcp_proxy import TcpProxy
from worker.celery import WORKER_APPLICATION_NAME, app

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis, pytest.mark.worker]

#: What a task that met a dead connection leaves in the worker's log: a failure, a retry, or
#: run_execute's own "the database is unreachable" (it retries the message after RUN_DB_RETRY_S).
_TASK_TROUBLE = re.compile(
    r"Task worker\.\S+\[[^\]]+\] (raised unexpected|retry|failed)|the database is unreachable|"
    r"OperationalError|InterfaceError"
)


def _run_once(user, seed: int) -> Run:
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(finding=finding, user=user, plugin="echo", reproduce=False)
    # the gpu queue: the session's shared worker (cpu, maintenance) never takes it
    return services.reproduction_request(experiment=experiment, user=user, seeds=[seed], device="gpu").runs.get()


def _outcome(log: str, task_id: str) -> str:
    """How the task ``task_id`` ended, read from the worker's log: "succeeded", "raised
    <exception>" or "unfinished"."""
    found = re.search(rf"\[{re.escape(task_id)}\] (succeeded|raised unexpected: \w+)", log)
    return "unfinished" if found is None else found.group(1).replace("raised unexpected:", "raised")


def _worker_session_kept() -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                       " AND application_name = %s", [WORKER_APPLICATION_NAME])
        return cursor.fetchone()[0] >= 1


def _succeeded(run: Run) -> bool:
    return Run.objects.get(pk=run.pk).state == "succeeded"


def test_a_worker_s_tasks_reconnect_after_an_outage_cut_its_kept_connections(worker_env, user):
    """Reset every connection of an idle worker that kept its database connection after a run: the
    next maintenance tasks, and the next run, succeed at once. The maintenance tasks are the
    test: without ``_drop_broken_connections`` before each task (worker/celery.py) each of them
    fails on the dead connection; with it but no health check (CONN_HEALTH_CHECKS off) the first
    one does. (A run would recover by itself: the runner closes unusable connections and retries.)"""
    db = settings.DATABASES["default"]
    address = worker_env["DATABASE_URL"].split("@", 1)[1].split("/", 1)[0]
    with TcpProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)) as proxy:
        env = {**worker_env, "DATABASE_URL": worker_env["DATABASE_URL"].replace(address, f"127.0.0.1:{proxy.port}")}
        # one pool process: the one that holds the kept connection takes every task after the cut
        worker = WorkerProcess(env, queues="gpu", concurrency=1)
        try:
            first = _run_once(user, seed=1)
            wait_for(lambda: _succeeded(first), timeout=60)
            wait_for(_worker_session_kept, timeout=10)  # Django's connection, through the proxy
            before = len(worker.output())
            accepted = proxy.accepted

            assert proxy.cut() >= 1  # the outage, while the worker is idle
            # the maintenance tasks (they have no retry of their own), on the worker's queue
            reaps = [f"reap-{uuid.uuid4().hex[:12]}" for _ in range(2)]
            for task_id in reaps:
                app.send_task("worker.runs_reap", queue="gpu", task_id=task_id)
                wait_for(lambda task_id=task_id: f"[{task_id}] succeeded" in worker.output()
                         or f"[{task_id}] raised" in worker.output(), timeout=30, interval=0.1)
            second = _run_once(user, seed=2)
            wait_for(lambda: _succeeded(second), timeout=60)
        finally:
            worker.stop()
        after = worker.output()[before:]
        assert proxy.accepted > accepted  # the worker reconnected through the proxy
    outcomes = [_outcome(after, task_id) for task_id in reaps]
    assert outcomes == ["succeeded", "succeeded"], f"the tasks after the cut: {outcomes}\n{after[-4000:]}"
    trouble = [line for line in after.splitlines() if _TASK_TROUBLE.search(line)]
    assert not trouble, after[-4000:]
    assert Run.objects.get(pk=second.pk).attempts == 1
