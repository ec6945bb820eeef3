"""Time from a reproduction request to its run starting on a real worker, and to its result.

Runs against a fresh database and broker of its own:
  embedded:  python bench/dispatch_latency.py                       (SQLite + SQLAlchemy broker)
  services:  python bench/dispatch_latency.py --services            (PostgreSQL + Redis on localhost)
Uses the fast `echo` test plugin so the figure is the registry's overhead, not training time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", action="store_true", help="PostgreSQL + Redis instead of the embedded default")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()

    var = tempfile.mkdtemp(prefix="bench-dispatch-")
    env = {
        **os.environ,
        "REGISTRY_VAR_DIR": var,
        "DJANGO_SETTINGS_MODULE": "registry.settings.base",
        "PLUGINS_EXTRA": "echo=tests.fakes.plugins:EchoExperiment",
        "PYTHONPATH": str(ROOT),
    }
    if args.services:
        db = f"bench_{os.getpid()}"
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {db}"], check=True,
                       capture_output=True)
        env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{db}"
        env["CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/14"
        env["CELERY_BROKER_KEY_PREFIX"] = f"bench{os.getpid()}:"
    os.environ.update(env)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)

    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from registry.findings.services import finding_create
    from registry.reproductions.models import Run
    from registry.reproductions.services import experiment_create, reproduction_request

    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "cpu", "--concurrency", "1",
         "--loglevel", "WARNING"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        user = get_user_model().objects.create(username="bench")
        finding = finding_create(user=user, title="bench", kind="fix")
        experiment = experiment_create(finding=finding, user=user, plugin="echo", reproduce=False)
        # warm-up: the worker's first task imports torch and the plugins
        first = reproduction_request(experiment=experiment, user=user, seeds=[0]).runs.get()
        wait(lambda: Run.objects.get(pk=first.pk).state == "succeeded", 120)
        to_start, to_result = [], []
        for i in range(args.requests):
            requested = time.time()
            run = reproduction_request(experiment=experiment, user=user, seeds=[i + 1]).runs.get()
            wait(lambda run=run: Run.objects.get(pk=run.pk).state == "succeeded", 60)
            run.refresh_from_db()
            to_start.append(run.started_at.timestamp() - requested)
            to_result.append(run.finished_at.timestamp() - requested)
    finally:
        worker.terminate()
        worker.wait(30)
    mode = "PostgreSQL + Redis" if args.services else "embedded (SQLite + SQLAlchemy broker)"
    print(f"{mode}, {args.requests} sequential single-run reproductions of the echo plugin:")
    for label, values in (("request -> run started", to_start), ("request -> result stored", to_result)):
        values.sort()
        p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
        print(f"  {label}: median {statistics.median(values) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
              f"max {values[-1] * 1000:.0f} ms")


def wait(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError


if __name__ == "__main__":
    main()
