"""How long a fresh CPU worker takes from spawn to consuming its first run (issue 9).

  python bench/worker_start.py [--starts 5] [--trees /path/a,/path/b] [--findings 300]

Against PostgreSQL and Redis on localhost (a database and a broker key prefix of its own), as in
bench/soak.py: production settings (registry.settings.base, DEBUG off), ``celery worker -Q cpu
--concurrency 1``. Per start: one run of the echo plugin (50 ms) is queued first, then a worker is
spawned; measured from the spawn: its "ready." log line, the run's claim (started_at) and its end
(finished_at). ``--trees`` compares source trees (say a copy of the code before a change): the
starts are interleaved, tree A then B then A... with the same command, the same database.
``--findings`` adds findings with an experiment each (the start-up stale check walks them).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:  # noqa: PLR0915 - one script, read top to bottom
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=5, help="starts per tree")
    parser.add_argument("--trees", default=str(ROOT), help="comma-separated source trees (interleaved)")
    parser.add_argument("--findings", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.trees.split(",") if t]

    var = tempfile.mkdtemp(prefix="bench-start-")
    db = f"bench_start_{os.getpid()}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RUN_", "REAPER_", "CELERY_", "DJANGO_"))},
        "REGISTRY_VAR_DIR": var,
        "DJANGO_SETTINGS_MODULE": "registry.settings.base",
        "DJANGO_DEBUG": "false",
        "PLUGINS_EXTRA": "echo=tests.fakes.plugins:EchoExperiment",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/13",
        "CELERY_BROKER_KEY_PREFIX": f"benchstart{os.getpid()}:",
        "QUOTA_ACTIVE_RUNS": "100000",
        "QUOTA_RUNS_PER_DAY": "100000",
    }
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {db}"], check=True,
                   capture_output=True)
    os.environ.update(env)
    os.environ["PYTHONPATH"] = str(ROOT)
    sys.path.insert(0, str(ROOT))
    worker: subprocess.Popen | None = None
    results: dict[str, list[dict[str, float | None]]] = {str(t): [] for t in trees}
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                       check=True)
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.db import connection

        from registry.findings.services import finding_create
        from registry.reproductions.models import Run
        from registry.reproductions.services import experiment_create, reproduction_request

        user = get_user_model().objects.create(username="bench")
        finding = finding_create(user=user, title="bench", kind="fix")
        experiment = experiment_create(finding=finding, user=user, plugin="echo", params={"sleep_s": 0.05},
                                       reproduce=False)
        for i in range(args.findings):
            other = finding_create(user=user, title=f"bench {i}", kind="fix")
            experiment_create(finding=other, user=user, plugin="echo", params={"sleep_s": 0.05}, reproduce=False)

        order = []
        for i in range(args.starts):
            order += trees if i % 2 == 0 else trees[::-1]
        for n, tree in enumerate(order):
            run = reproduction_request(experiment=experiment, user=user, seeds=[n]).runs.get()
            log = Path(var) / f"worker-{n}.log"
            spawned = time.time()
            with log.open("w") as out:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "cpu", "--concurrency", "1",
                     "--loglevel", "INFO", "--without-gossip", "--without-mingle", "-n", f"start{n}@%h"],
                    cwd=tree, env={**env, "PYTHONPATH": str(tree)}, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            ready = None
            deadline = time.monotonic() + 180
            while True:
                if ready is None and "ready." in log.read_text(errors="replace"):
                    ready = time.time() - spawned
                state, started_at, finished_at = Run.objects.filter(pk=run.pk).values_list(
                    "state", "started_at", "finished_at").get()
                connection.close()
                if state in ("succeeded", "failed") and ready is not None:
                    break
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"start {n} did not finish its run: {log.read_text()[-3000:]}")
                time.sleep(0.02)
            row = {"ready_s": round(ready, 3), "first_claim_s": round(started_at.timestamp() - spawned, 3),
                   "first_finish_s": round(finished_at.timestamp() - spawned, 3), "state": state}
            results[str(tree)].append(row)
            print(f"{tree}: {row}  load {os.getloadavg()[0]:.2f}", flush=True)
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
            worker = None
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        from django.db import connections

        connections.close_all()
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c",
                        f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True)
        import shutil

        shutil.rmtree(var, ignore_errors=True)
    summary = {}
    for tree, rows in results.items():
        summary[tree] = {key: {"median": round(statistics.median(r[key] for r in rows), 3),
                               "max": round(max(r[key] for r in rows), 3)}
                         for key in ("ready_s", "first_claim_s", "first_finish_s")} if rows else {}
        print(f"{tree}: {summary[tree]}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "starts": results, "load": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
