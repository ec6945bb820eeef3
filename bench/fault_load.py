"""Load with faults: many runs through several real workers while workers are SIGKILLed at random.
Checks that every run ends `succeeded` exactly once (one set of measurements, one run.finished
event) and reports how long the batch took and how many runs had to be retried.

    python bench/fault_load.py --runs 200 --workers 3 --kill-every 5     (PostgreSQL + Redis)
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def start_worker(env: dict[str, str], index: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "cpu", "--concurrency", "1",
         "--loglevel", "WARNING", "-n", f"load{index}-{time.time_ns()}@%h", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between worker kills")
    parser.add_argument("--run-seconds", type=float, default=0.5, help="work per run (echo plugin)")
    args = parser.parse_args()

    db = f"bench_faults_{os.getpid()}"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {db}"],
                   check=True, capture_output=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "registry.settings.base",
        "REGISTRY_VAR_DIR": tempfile.mkdtemp(prefix="bench-faults-"),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/13",
        "CELERY_BROKER_KEY_PREFIX": f"faults{os.getpid()}:",
        "PLUGINS_EXTRA": "echo=tests.fakes.plugins:EchoExperiment",
        "RUN_HEARTBEAT_INTERVAL_S": "0.5",
        "RUN_HEARTBEAT_TIMEOUT_S": "5",
        "RUN_MAX_ATTEMPTS": "10",
        "RUN_REDISPATCH_AFTER_S": "15",
        "PYTHONPATH": str(ROOT),
    }
    os.environ.update(env)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from registry.events.models import Event
    from registry.findings.services import finding_create
    from registry.reproductions.models import Measurement, Run
    from registry.reproductions.services import experiment_create, reproduction_request, runs_reap

    user = get_user_model().objects.create(username="load")
    finding = finding_create(user=user, title="load", kind="fix")
    experiment = experiment_create(finding=finding, user=user, plugin="echo",
                                   params={"sleep_s": args.run_seconds}, reproduce=False)
    workers = [start_worker(env, i) for i in range(args.workers)]
    rng = random.Random(0)
    kills = 0
    started = time.monotonic()
    for batch in range(0, args.runs, 50):
        reproduction_request(experiment=experiment, user=user,
                             seeds=list(range(batch, min(args.runs, batch + 50))))
    next_kill = time.monotonic() + args.kill_every
    try:
        while Run.objects.filter(state__in=["queued", "running"]).exists():
            time.sleep(0.5)
            runs_reap()
            if time.monotonic() >= next_kill:
                victim = rng.randrange(len(workers))
                os.killpg(workers[victim].pid, signal.SIGKILL)
                workers[victim].wait()
                workers[victim] = start_worker(env, victim + 100 * kills)
                kills += 1
                next_kill = time.monotonic() + args.kill_every
            if time.monotonic() - started > 1800:
                raise TimeoutError("runs did not finish in 30 minutes")
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
    elapsed = time.monotonic() - started
    runs = Run.objects.filter(reproduction__experiment=experiment)
    states = {state: runs.filter(state=state).count() for state in ("succeeded", "failed", "timed_out")}
    retried = runs.filter(attempts__gt=1).count()
    measurements = Measurement.objects.filter(run__in=runs).count()
    finished_events = Event.objects.filter(type="run.finished").count()
    # Each run ends once (one run.finished event) with exactly one set of measurements if it succeeded;
    # a run whose worker died RUN_MAX_ATTEMPTS times is failed on purpose, not lost.
    ok = (sum(states.values()) == args.runs and measurements == states["succeeded"] * 6
          and finished_events == args.runs)
    print(f"{args.runs} runs of {args.run_seconds}s, {args.workers} workers, {kills} SIGKILLs "
          f"(every {args.kill_every}s): {elapsed:.0f} s; states {states}; retried {retried}; "
          f"measurements {measurements} (expected {args.runs * 6}); run.finished events {finished_events}; "
          f"max attempts {max(runs.values_list('attempts', flat=True))}; "
          f"{'OK: nothing lost or duplicated' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
