"""The worker's per-run overhead and throughput, zygote (RUN_CHILD_START=zygote) vs spawn.

  python bench/worker_overhead.py [--overhead-runs 30] [--runs 200] [--modes zygote,spawn]

Against PostgreSQL and Redis on localhost (a database and a broker key prefix of its own), with
real ``celery worker`` processes:

(a) overhead: ``--overhead-runs`` sequential runs of a 0.5 s plugin through a worker with one pool
    process, per start mode. Per run: the Celery task's runtime (from the worker's "succeeded in"
    log line: task start -> result committed) minus the plugin's own time (measured inside run());
    and the full path, request -> the run's finished_at, minus the plugin's time.
(b) throughput: ``--runs`` runs of a 50 ms plugin through a worker with 2 pool processes (ideal:
    2 / 0.05 s = 40 runs/s), first claim -> last finished_at.
(c) progress: 0.5 s runs whose plugin calls ctx.progress every 1 ms step; the time spent inside
    those calls as a share of the plugin's time, and the task's overhead against (a).
(d) the database statements one run costs (run_execute in this process, echo-like 0.5 s plugin).

The plugin is ``SleepExperiment`` below (enabled through PLUGINS_EXTRA), so the figures are the
registry's overhead, not training time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp_registry.sdk import Axis, Experiment, Metric, Params  # noqa: E402
from pydantic import Field  # noqa: E402


class SleepParams(Params):
    sleep_s: float = Field(0.5, ge=0.0, le=60.0)
    step_s: float = Field(0.0, ge=0.0, le=1.0, description="0: one sleep; else steps of this length")
    progress: bool = Field(False, description="call ctx.progress after every step")


class SleepExperiment(Experiment):
    """Sleeps ``sleep_s`` and reports its own time (plugin_s) and the time spent in ctx.progress."""

    name = "benchsleep"
    version = "1.0.0"
    Params = SleepParams
    metrics = (Metric("plugin_s", Axis.DIAGNOSTIC, higher_is_better=False, unit="s"),
               Metric("progress_s", Axis.DIAGNOSTIC, higher_is_better=False, unit="s"),
               Metric("progress_calls", Axis.DIAGNOSTIC, higher_is_better=False))

    def run(self, params: SleepParams, ctx) -> dict[str, dict[str, float]]:
        started = time.perf_counter()
        in_progress, calls = 0.0, 0
        if params.step_s <= 0:
            time.sleep(params.sleep_s)
        else:
            deadline = started + params.sleep_s
            while (now := time.perf_counter()) < deadline:
                time.sleep(min(params.step_s, deadline - now))
                if params.progress:
                    before = time.perf_counter()
                    ctx.progress((before - started) / params.sleep_s, f"step {calls}")
                    in_progress += time.perf_counter() - before
                    calls += 1
        values = {"plugin_s": time.perf_counter() - started, "progress_s": in_progress, "progress_calls": calls}
        return {"baseline": dict(values), "intervention": dict(values)}


# ---------------------------------------------------------------- the benchmark


def main() -> None:  # noqa: C901, PLR0915 - one script, read top to bottom
    import argparse
    import os
    import re
    import statistics
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser()
    parser.add_argument("--overhead-runs", type=int, default=30)
    parser.add_argument("--runs", type=int, default=200, help="runs of the 50 ms plugin for the throughput")
    parser.add_argument("--modes", default="zygote,spawn")
    parser.add_argument("--throughput-modes", default="zygote")
    parser.add_argument("--prefetch-multiplier", type=int, default=None,
                        help="the workers' --prefetch-multiplier (default: the registry's setting, 1)")
    parser.add_argument("--batched-seeds", type=int, default=0,
                        help="(e): N seeds of one superposition reproduction through run_execute, "
                             "RUN_BATCH_SEEDS=N against 1 (0: skip)")
    parser.add_argument("--batched-preset", default=None, help="(e)'s superposition preset (default parameters)")
    parser.add_argument("--batched-device", default="cpu", choices=["cpu", "gpu"],
                        help="(e)'s reproduction device (gpu: on a machine with CUDA)")
    args = parser.parse_args()

    var = tempfile.mkdtemp(prefix="bench-overhead-")
    db = f"bench_overhead_{os.getpid()}"
    env = {
        **os.environ,
        "REGISTRY_VAR_DIR": var,
        "DJANGO_SETTINGS_MODULE": "registry.settings.base",
        "PLUGINS_EXTRA": "benchsleep=bench.worker_overhead:SleepExperiment",
        "PYTHONPATH": str(root),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/14",
        "CELERY_BROKER_KEY_PREFIX": f"benchoverhead{os.getpid()}:",
        "QUOTA_ACTIVE_RUNS": "100000",
        "QUOTA_RUNS_PER_DAY": "100000",
    }
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {db}"], check=True,
                   capture_output=True)
    os.environ.update(env)
    workers: list[subprocess.Popen] = []
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=root, env=env, check=True)
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.db import connection

        from registry.findings.services import finding_create
        from registry.reproductions.models import Measurement, Run
        from registry.reproductions.services import experiment_create, reproduction_request

        user = get_user_model().objects.create(username="bench")
        finding = finding_create(user=user, title="bench", kind="fix")

        def experiment(**params: object):
            return experiment_create(finding=finding, user=user, plugin="benchsleep", params=params,
                                     reproduce=False)

        def start_worker(mode: str, concurrency: int) -> tuple[subprocess.Popen, Path]:
            log = Path(var) / f"worker-{mode}-{concurrency}-{time.time_ns()}.log"
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "cpu", "--concurrency",
                 str(concurrency), "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                 "-n", f"bench-{mode}-{time.time_ns()}@%h",
                 *(["--prefetch-multiplier", str(args.prefetch_multiplier)] if args.prefetch_multiplier else [])],
                cwd=root, env={**env, "RUN_CHILD_START": mode}, stdout=log.open("w"), stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            workers.append(worker)
            deadline = time.monotonic() + 90
            while "ready." not in log.read_text():
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"the worker did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
            return worker, log

        def stop_worker(worker: subprocess.Popen) -> None:
            import signal

            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)

        def wait_done(run_ids: list[int], timeout: float, interval_s: float = 0.01) -> None:
            deadline = time.monotonic() + timeout
            while Run.objects.filter(pk__in=run_ids, state__in=["queued", "running"]).exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("runs did not finish in time")
                time.sleep(interval_s)
            bad = list(Run.objects.filter(pk__in=run_ids).exclude(state="succeeded").values_list("error", flat=True))
            if bad:
                raise RuntimeError(f"{len(bad)} runs did not succeed: {bad[:3]}")

        def plugin_time(run_id: int, metric: str = "plugin_s") -> float:
            return Measurement.objects.get(run_id=run_id, arm="baseline", metric=metric).value

        def pct(values: list[float], q: float) -> float:
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

        # the runs' own lines: a duplicate message (a redelivery on a loaded machine) logs "skipped: ..."
        task_line = re.compile(r"Task worker\.run_execute\[[^\]]+\] succeeded in ([0-9.]+)s: 'succeeded'")
        lines: list[str] = []

        def sequential(mode: str, n: int, warmup: int, **params: object) -> dict[str, list[float]]:
            worker, log = start_worker(mode, 1)
            try:
                exp = experiment(**params)
                runs, requested = [], []
                for i in range(warmup + n):
                    before = time.time()
                    run = reproduction_request(experiment=exp, user=user, seeds=[i]).runs.get()
                    wait_done([run.pk], 120)
                    runs.append(run.pk)
                    requested.append(before)
                times = [float(t) for t in task_line.findall(log.read_text())]
            finally:
                stop_worker(worker)
            if len(times) != warmup + n:
                raise RuntimeError(f"expected {warmup + n} task lines, found {len(times)}")
            out: dict[str, list[float]] = {"task": [], "full": [], "start": [], "progress_share": []}
            for run_id, before, task_s in list(zip(runs, requested, times, strict=True))[warmup:]:
                run = Run.objects.get(pk=run_id)
                plugin_s = plugin_time(run_id)
                out["task"].append(task_s - plugin_s)
                out["full"].append(run.finished_at.timestamp() - before - plugin_s)
                out["start"].append(float(run.environment.get("child_start_s") or 0))
                out["progress_share"].append(plugin_time(run_id, "progress_s") / plugin_s)
                assert run.environment["child_started_by"] == mode, run.environment
            return out

        def summary(values: list[float]) -> str:
            return (f"p50 {statistics.median(values) * 1000:7.1f} ms  p95 {pct(values, 0.95) * 1000:7.1f} ms  "
                    f"max {max(values) * 1000:7.1f} ms")

        # (a) overhead, per start mode
        for mode in [m for m in args.modes.split(",") if m]:
            result = sequential(mode, args.overhead_runs, 2, sleep_s=0.5)
            lines += [
                f"(a) {mode:6s} {args.overhead_runs} sequential runs of a 0.5 s plugin, 1 pool process:",
                f"    task start -> result committed, minus plugin time: {summary(result['task'])}",
                f"    request -> finished_at (through Celery), minus plugin time: {summary(result['full'])}",
                f"    child start (until its first message):             {summary(result['start'])}",
            ]
            print("\n".join(lines[-4:]), flush=True)

        # (c) progress reported every ~1 ms step (zygote)
        result = sequential("zygote", 5, 1, sleep_s=0.5, step_s=0.001, progress=True)
        lines += [
            "(c) zygote 5 runs of a 0.5 s plugin calling ctx.progress every ~1 ms step:",
            f"    time inside ctx.progress / plugin time: max {max(result['progress_share']) * 100:.3f} %",
            f"    task start -> result committed, minus plugin time: {summary(result['task'])}",
        ]
        print("\n".join(lines[-3:]), flush=True)

        # (b) throughput through 2 pool processes
        for mode in [m for m in args.throughput_modes.split(",") if m]:
            worker, _ = start_worker(mode, 2)
            try:
                warm = experiment(sleep_s=0.05)
                warm_ids = list(reproduction_request(experiment=warm, user=user, seeds=list(range(4)))
                                .runs.values_list("pk", flat=True))
                wait_done(warm_ids, 180)
                ids: list[int] = []
                requested = time.time()
                exp = experiment(sleep_s=0.05)
                for start in range(0, args.runs, 50):
                    seeds = list(range(start, min(args.runs, start + 50)))
                    ids += list(reproduction_request(experiment=exp, user=user, seeds=seeds)
                                .runs.values_list("pk", flat=True))
                # the rate comes from the runs' own timestamps; polling every 10 ms with hundreds of
                # ids took ~0.3 of the 2 CPUs the worker measured here needs (session 24, perf)
                wait_done(ids, 600, interval_s=0.25)
            finally:
                stop_worker(worker)
            runs = list(Run.objects.filter(pk__in=ids))
            first = min(r.started_at for r in runs).timestamp()
            last = max(r.finished_at for r in runs).timestamp()
            rate = len(ids) / (last - first)
            # where a pool process's time goes: started_at (stamped as the claim begins) -> finished_at
            # (stamped as the save begins): the plugin's 50 ms and the run's path up to the save; and
            # finished_at -> the process's next started_at: the save, the task's end, Celery's
            # hand-over of the next task, its start
            by_process: dict[str, list] = {}
            for run in runs:
                by_process.setdefault(run.worker_host, []).append(run)
            busy = [(r.finished_at - r.started_at).total_seconds() * 1000 for r in runs]
            gaps = []
            for same in by_process.values():
                same.sort(key=lambda r: r.started_at)
                gaps += [(b.started_at - a.finished_at).total_seconds() * 1000
                         for a, b in zip(same, same[1:], strict=False)]
            lines += [
                f"(b) {mode:6s} {len(ids)} runs of a 50 ms plugin, 2 pool processes:",
                f"    {rate:.1f} runs/s first claim -> last finished ({rate / 40 * 100:.0f} % of the ideal 40/s); "
                f"{len(ids) / (last - requested):.1f} runs/s from the first request",
                f"    per pool process: started_at -> finished_at p50 {pct(busy, 0.5):.1f} ms; finished_at -> its "
                f"next run's started_at p50 {pct(gaps, 0.5):.1f} ms, p95 {pct(gaps, 0.95):.1f} ms "
                f"({len(by_process)} processes)",
            ]
            print("\n".join(lines[-3:]), flush=True)

        # (d) database statements per run (run_execute in this process)
        from django.test.utils import CaptureQueriesContext

        from worker.runner import run_execute
        from worker.zygote import zygote_stop

        exp = experiment(sleep_s=0.5)
        counts = []
        for seed in range(3):
            run = reproduction_request(experiment=exp, user=user, seeds=[seed]).runs.get()  # no worker takes it
            with CaptureQueriesContext(connection) as queries:
                assert run_execute(run.pk) == "succeeded"
            counts.append(len(queries.captured_queries))
            if seed == 2:
                verbs: dict[str, int] = {}
                for query in queries.captured_queries:
                    verb = query["sql"].split(None, 1)[0].upper()
                    verbs[verb] = verbs.get(verb, 0) + 1
                lines.append(f"(d) database statements per 0.5 s run (run_execute): {counts}; last one by kind: "
                             f"{dict(sorted(verbs.items()))}")
                print(lines[-1], flush=True)
        zygote_stop()

        # (e) seeds in parallel through the worker's path (run_execute in this process)
        if args.batched_seeds > 0:
            from django.test.utils import override_settings

            from plugins.registry import get_plugin

            plugin = get_plugin("superposition")
            params = dict(plugin.presets[args.batched_preset]) if args.batched_preset else {}
            seeds = list(range(args.batched_seeds))
            walls: dict[int, float] = {}
            for size in (1, args.batched_seeds):
                with override_settings(RUN_BATCH_SEEDS=size):
                    exp = experiment_create(finding=finding, user=user, plugin="superposition", params=params,
                                            reproduce=False)
                    ids = list(reproduction_request(experiment=exp, user=user, seeds=seeds,
                                                    device=args.batched_device)
                               .runs.order_by("seed").values_list("pk", flat=True))
                    started = time.perf_counter()
                    for run_id in ids:  # no worker runs: each queued run is executed here, in order
                        if Run.objects.filter(pk=run_id, state="queued").exists():
                            run_execute(run_id)
                    walls[size] = time.perf_counter() - started
                    states = set(Run.objects.filter(pk__in=ids).values_list("state", flat=True))
                    assert states == {"succeeded"}, states
            zygote_stop()
            one, batch = walls[1], walls[args.batched_seeds]
            lines.append(
                f"(e) superposition ({args.batched_preset or 'default parameters'}, {args.batched_device}), "
                f"{len(seeds)} seeds of one "
                f"reproduction through run_execute, one process: one run per process {one:.1f} s "
                f"({len(seeds) / one:.3f} runs/s), RUN_BATCH_SEEDS={args.batched_seeds} {batch:.1f} s "
                f"({len(seeds) / batch:.3f} runs/s): {one / batch:.2f}x")
            print(lines[-1], flush=True)
    finally:
        for worker in workers:
            if worker.poll() is None:
                import signal

                os.killpg(worker.pid, signal.SIGKILL)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001
            pass
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE IF EXISTS {db}"],
                       capture_output=True)
        import shutil

        shutil.rmtree(var, ignore_errors=True)
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
