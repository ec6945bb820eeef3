"""Profile the worker's per-run path (issue 11): ``run_execute`` in this process, as a Celery pool
process calls it, for runs of the 50 ms sleep plugin of bench/worker_overhead.py, under
pyinstrument (wall-clock: the waits on the child show as such).

  python bench/profile_worker_run.py [--runs 30] [--output bench/results/profiles/worker_run.txt]
  python bench/profile_worker_run.py --phases [--runs 40]

Against PostgreSQL on localhost (a database of its own); the zygote start mode; the first runs
(the zygote's start) are not profiled. Also prints the per-run wall time minus the plugin's own.
``--phases``: no profiler; instead each run's path is cut at its steps (the claim, the child's
start, its first message, its result message, its exit, the save) and the p50 of each step is
printed, the plugin's own time taken out of the step it falls in.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--sleep-s", type=float, default=0.05)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--phases", action="store_true", help="time each step of a run instead of profiling")
    args = parser.parse_args()
    var = tempfile.mkdtemp(prefix="bench-profile-")
    db = f"bench_profile_{os.getpid()}"
    os.environ.update({
        "REGISTRY_VAR_DIR": var,
        "DJANGO_SETTINGS_MODULE": "registry.settings.base",
        "DJANGO_DEBUG": "false",
        "PLUGINS_EXTRA": "benchsleep=bench.worker_overhead:SleepExperiment",
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/14",
        "CELERY_BROKER_KEY_PREFIX": f"benchprofile{os.getpid()}:",
        "QUOTA_ACTIVE_RUNS": "100000",
        "QUOTA_RUNS_PER_DAY": "100000",
        "RUN_CHILD_START": "zygote",
        # as a worker keeps its connection from run to run (worker/celery.py: CONN_MAX_AGE); with 0,
        # run_execute's close_old_connections() would reconnect for every run
        "DATABASE_CONN_MAX_AGE": "600",
    })
    sys.path.insert(0, str(ROOT))
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {db}"], check=True,
                   capture_output=True)
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from pyinstrument import Profiler

        from registry.findings.services import finding_create
        from registry.reproductions.models import Measurement
        from registry.reproductions.services import experiment_create, reproduction_request
        from worker import liveness
        from worker.runner import run_execute
        from worker.zygote import zygote_stop

        liveness.KEEP_CONNECTION = True  # as in a worker (worker/celery.py)
        user = get_user_model().objects.create(username="bench")
        finding = finding_create(user=user, title="bench", kind="fix")
        experiment = experiment_create(finding=finding, user=user, plugin="benchsleep",
                                       params={"sleep_s": args.sleep_s}, reproduce=False)
        # requested up front (no worker takes them: the broker key prefix is our own)
        runs = list(reproduction_request(experiment=experiment, user=user, seeds=list(range(args.runs + 3)))
                    .runs.order_by("pk").values_list("pk", flat=True))
        for run_id in runs[:3]:  # the zygote's start and the first imports
            assert run_execute(run_id) == "succeeded"
        if args.phases:
            print(_phases(runs[3:], run_execute, Measurement))
            zygote_stop()
            return
        profiler = Profiler(interval=0.0005)
        walls = []
        profiler.start()
        for run_id in runs[3:]:
            started = time.perf_counter()
            assert run_execute(run_id) == "succeeded"
            walls.append(time.perf_counter() - started)
        profiler.stop()
        plugin = dict(Measurement.objects.filter(run_id__in=runs[3:], arm="baseline", metric="plugin_s")
                      .values_list("run_id", "value"))
        overhead = sorted(w - plugin[r] for w, r in zip(walls, runs[3:], strict=True))
        summary = (f"{len(overhead)} runs of a {args.sleep_s * 1000:.0f} ms plugin: run_execute wall minus plugin "
                   f"time p50 {statistics.median(overhead) * 1000:.1f} ms, min {overhead[0] * 1000:.1f} ms, "
                   f"max {overhead[-1] * 1000:.1f} ms; load {os.getloadavg()[0]:.2f}")
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        extra = reproduction_request(experiment=experiment, user=user, seeds=[10**6]).runs.get()
        with CaptureQueriesContext(connection) as queries:
            assert run_execute(extra.pk) == "succeeded"
        verbs: dict[str, int] = {}
        for query in queries.captured_queries:
            verb = query["sql"].split(None, 1)[0].upper()
            verbs[verb] = verbs.get(verb, 0) + 1
        summary += (f"\nstatements of one run on the Django connection: {len(queries.captured_queries)} "
                    f"{dict(sorted(verbs.items()))} (+ the liveness lock and unlock on its own connection)")
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        print(summary)
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(summary + "\n\n" + text)
        else:
            print(text)
        zygote_stop()
    finally:
        from django.db import connections

        connections.close_all()
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c",
                        f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True)
        import shutil

        shutil.rmtree(var, ignore_errors=True)


def _phases(run_ids: list[int], run_execute, measurement_model) -> str:  # noqa: ANN001
    """Run ``run_ids`` one after another with the steps of ``run_execute`` timed (wrappers on the
    functions it calls, and the time the child's environment and result messages are read)."""
    import json
    import threading
    from collections import defaultdict

    from registry.reproductions import services
    from worker import sandbox

    marks: dict[str, float] = {}

    class TimedJson:  # the channel reader's json.loads: the moment each kind of message is read
        dumps = staticmethod(json.dumps)

        @staticmethod
        def loads(text, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN205
            message = json.loads(text, *a, **k)
            if isinstance(message, dict) and message.get("t") in ("environment", "result"):
                marks.setdefault(message["t"], time.perf_counter())
            return message

    def timed(owner, name: str) -> None:  # noqa: ANN001
        original = getattr(owner, name)

        def wrapper(*a, **k):  # noqa: ANN002, ANN003, ANN202
            if threading.current_thread() is not threading.main_thread():  # the previous run's cleanup
                return original(*a, **k)
            marks[f"{name}:0"] = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                marks.setdefault(f"{name}:1", time.perf_counter())

        setattr(owner, name, wrapper)

    sandbox.json = TimedJson  # type: ignore[assignment]
    for owner, name in ((services, "run_claim_loaded"), (services, "run_succeed"), (sandbox.ChildRun, "start"),
                        (sandbox.ChildRun, "finish")):
        timed(owner, name)
    wait = sandbox.ChildRun.wait

    def timed_wait(self, timeout):  # noqa: ANN001, ANN202
        code = wait(self, timeout)
        if code is not None:
            marks.setdefault("exited", time.perf_counter())
        return code

    sandbox.ChildRun.wait = timed_wait
    rows = []
    for run_id in run_ids:
        marks.clear()
        started = time.perf_counter()
        assert run_execute(run_id) == "succeeded"
        rows.append((run_id, started, time.perf_counter(), dict(marks)))
    plugin = dict(measurement_model.objects.filter(run_id__in=run_ids, arm="baseline", metric="plugin_s")
                  .values_list("run_id", "value"))
    steps: dict[str, list[float]] = defaultdict(list)
    for run_id, started, ended, m in rows:
        for name, a, b in (
            ("task start -> claim", started, m["run_claim_loaded:0"]),
            ("claim (UPDATE, event, commit)", m["run_claim_loaded:0"], m["run_claim_loaded:1"]),
            ("claimed -> child start", m["run_claim_loaded:1"], m["start:0"]),
            ("child start (a spare from the zygote)", m["start:0"], m["start:1"]),
            ("started -> its first message", m["start:1"], m["environment"]),
            ("first message -> result, minus the plugin", m["environment"], m["result"] - plugin[run_id]),
            ("result -> the process has exited", m["result"], m["exited"]),
            ("exited -> finish() done", m["exited"], m["finish:1"]),
            ("finish -> save (results, artifacts read)", m["finish:1"], m["run_succeed:0"]),
            ("save (measurements, state, event, commit)", m["run_succeed:0"], m["run_succeed:1"]),
            ("save -> task end (liveness unlock, cleanup)", m["run_succeed:1"], ended),
            ("all, minus the plugin", started, ended - plugin[run_id]),
        ):
            steps[name].append((b - a) * 1000)
    lines = [f"{len(rows)} runs of the sleep plugin, one after another; load {os.getloadavg()[0]:.2f}",
             f"{'step':48s} {'p50 ms':>8s} {'min ms':>8s}"]
    lines += [f"{name:48s} {statistics.median(v):8.2f} {min(v):8.2f}" for name, v in steps.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
