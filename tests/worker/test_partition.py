"""Two hosts, one partition (issue 9): worker B runs in its own network namespace on this machine
and its link is cut mid-run. The reaper requeues the run once B's heartbeat is stale, worker A
finishes it, and when the link returns B's late result is discarded: the run keeps A's result,
scored once."""

import os
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings

from registry.effects.models import FindingEffects
from registry.events.models import Event
from registry.reproductions import services
from registry.reproductions.models import Artifact, Measurement, Run
from tests.conftest import wait_for
from tests.factories import FindingFactory
from tests.worker.netns import NamespacedHost, NamespaceUnavailable, Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis, pytest.mark.worker]

HEARTBEAT_TIMEOUT_S = 3.0
#: How long the run takes on B: it is cut off at most ~1 s into it, so its plugin finishes while
#: cut off and B holds a result to write when the link returns.
SLOW_S = 4.0
#: Small intervals for both workers (settings read them from the environment).
FAST = {
    "RUN_HEARTBEAT_INTERVAL_S": "0.5",
    "RUN_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
    "REAPER_INTERVAL_S": "1",
    "RUN_REDISPATCH_AFTER_S": "5",
}
TASK_LINE = re.compile(r"Task worker\.run_execute\[([^\]]+)\] (received|succeeded|failed|raised|retry)")


def _with_address(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"))


@pytest.fixture
def other_workers_off_cpu(worker_env):
    """Workers already consuming the test broker (the session's worker) stop taking runs, so the
    run goes to host B and then to host A; they consume ``cpu`` again afterwards."""
    from worker.celery import app

    app.control.cancel_consumer("cpu", reply=True, timeout=3)
    yield
    app.control.add_consumer("cpu", reply=True, timeout=3)


@pytest.fixture
def host_b(worker_env, other_workers_off_cpu):
    """Worker B's host: a network namespace whose PostgreSQL and Redis traffic goes through
    forwarders in this process. Removed (with B's whole process group) whatever happens."""
    try:
        host = NamespacedHost(str(os.getpid()))
    except NamespaceUnavailable as error:
        pytest.skip(f"network namespaces are not available to this user or kernel: {error}")
    workers: list[Worker] = []
    try:
        db = settings.DATABASES["default"]
        broker = urlsplit(settings.CELERY_BROKER_URL)
        db_addr = host.forward(15432, (db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
        broker_addr = host.forward(16379, (broker.hostname or "127.0.0.1", broker.port or 6379))
        host.env = {
            **worker_env,
            **FAST,
            "DATABASE_URL": _with_address(worker_env["DATABASE_URL"], *db_addr),
            "CELERY_BROKER_URL": _with_address(settings.CELERY_BROKER_URL, *broker_addr),
        }
        host.workers = workers
        yield host
    finally:
        for worker in workers:
            worker.stop(timeout=5)
        host.remove()


def _snapshot(run_id: int) -> dict:
    run = Run.objects.get(pk=run_id)
    return {
        "run": {
            field: getattr(run, field)
            for field in ("state", "attempts", "worker_host", "finished_at", "environment", "logs", "hardware",
                          "error", "claim_token")
        },
        "measurements": sorted(Measurement.objects.filter(run_id=run_id).values_list("pk", "arm", "metric", "value")),
        "artifacts": sorted(Artifact.objects.filter(run_id=run_id).values_list("pk", "name", "sha256")),
        "events": sorted(Event.objects.filter(payload__run=run_id).values_list("pk", "type")),
    }


def _first_task_ended(output: str) -> bool:
    """Whether the first run_execute task in a worker's log (its own claim) has ended."""
    lines = TASK_LINE.findall(output)
    if not lines:
        return False
    first = lines[0][0]
    return any(task == first and status != "received" for task, status in lines)


def test_a_partitioned_worker_is_replaced_and_its_late_result_discarded(worker_env, host_b, user):
    here = socket.gethostname()
    assert host_b.hostname != here
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(
        finding=finding, user=user, plugin="host_bound", reproduce=False,
        params={"slow_host": host_b.hostname, "slow_s": SLOW_S, "fast_s": 0.5},
    )
    started = time.monotonic()
    worker_b = Worker(host_b.env, queues="cpu", prefix=host_b.command)
    host_b.workers.append(worker_b)
    b_ready = time.monotonic()
    reproduction = services.reproduction_request(experiment=experiment, user=user, seeds=[5])
    run = reproduction.runs.get()

    def running_on_b() -> bool:
        current = Run.objects.get(pk=run.pk)
        return current.state == "running" and current.worker_host.startswith(host_b.hostname) and current.progress > 0

    wait_for(running_on_b, timeout=60)
    host_b.cut()
    cut = time.monotonic()

    # Host A: this machine's network, with the reaper's schedule embedded (-B)
    worker_a = Worker(
        {**worker_env, **FAST}, queues="cpu,maintenance",
        extra=["-B", "-s", str(Path(settings.VAR_DIR) / f"beat-{os.getpid()}")],
    )
    host_b.workers.append(worker_a)
    wait_for(lambda: Event.objects.filter(type="run.requeued", payload__run=run.pk).exists(), timeout=30)
    requeued = time.monotonic()
    wait_for(lambda: Run.objects.get(pk=run.pk).state not in ("queued", "running"), timeout=60)
    finished = time.monotonic()

    run.refresh_from_db()
    assert run.state == "succeeded", (run.error, worker_a.output()[-3000:])
    assert run.attempts == 2
    assert run.worker_host.startswith(here), run.worker_host  # A's, not B's
    assert run.environment.get("hostname") == here
    values = list(Measurement.objects.filter(run=run).values_list("metric", "value"))
    assert len(values) == 4  # 2 arms x 2 metrics: one set
    assert {value for metric, value in values if metric == "host_mark"} == {1.0}  # computed on A
    assert Event.objects.filter(type="run.started", payload__run=run.pk).count() == 2
    assert Event.objects.filter(type="run.requeued", payload__run=run.pk).count() == 1
    assert Event.objects.filter(type="run.finished", payload__run=run.pk).count() == 1
    before = _snapshot(run.pk)

    # B's plugin has finished by now (it never checks for a stop). The link returns: B tries to
    # write its result, on a claim that is no longer its own.
    time.sleep(max(0.0, cut + SLOW_S + 1.0 - time.monotonic()))
    host_b.restore()
    restored = time.monotonic()
    wait_for(lambda: _first_task_ended(worker_b.output()), timeout=90, interval=0.5)
    b_done = time.monotonic()
    time.sleep(1.0)  # anything B still had in flight lands now
    after = _snapshot(run.pk)
    assert after == before, worker_b.output()[-4000:]
    assert not Measurement.objects.filter(run=run, metric="host_mark", value=2.0).exists()
    assert Event.objects.filter(type="run.finished", payload__run=run.pk).count() == 1
    b_log = worker_b.output()
    assert "discarded" in b_log, b_log[-4000:]  # it computed a result and was refused

    # the effects recompute A's result requested ends before the test database is flushed
    wait_for(lambda: not FindingEffects.objects.filter(pending=True).exists(), timeout=60)
    print(
        f"\ntimings: B ready {b_ready - started:.1f}s, running on B +{cut - b_ready:.1f}s, requeued "
        f"{requeued - cut:.1f}s after the cut, finished by A +{finished - requeued:.1f}s, B's late attempt "
        f"ended {b_done - restored:.1f}s after the link returned; total {time.monotonic() - started:.1f}s"
    )
