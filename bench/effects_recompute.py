"""Writes and effects at scale, on PostgreSQL (issue 11):

- the effects recompute of one finding with N runs (default 10,000 runs x 6 measurements, loaded
  with bulk inserts), timed over a few repetitions, optionally profiled (cProfile);
- the size of the stored effects and of the effects response for a finding with 1,000 runs;
- the latency of self-reported writes on one finding through the API (Django's test client, no
  HTTP server): p50 over runs 1-100 and over the last 100, one run per request, then batches.

    python bench/effects_recompute.py                           # all of it (about a minute)
    python bench/effects_recompute.py --runs 10000 --profile    # plus the recompute's profile
    python bench/effects_recompute.py --writes 0                # skip the write latency

It creates a scratch database ``bench_effects_<pid>`` on the server of ``DATABASE_URL`` (default
postgres://postgres@127.0.0.1:5432/postgres), migrates it, and drops it at the end (``--keep``
keeps it). The recompute task is not sent to any broker: writes only request it, as in
production, and the recompute is timed on its own. Results: stdout and
``bench/results/effects_recompute.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARMS = ("baseline", "intervention")


def _scratch_database(server_url: str, name: str, *, create: bool) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')


def _setup(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry.settings.base")
    # the tests' "echo" plugin: 3 metrics (safety, capability, diagnostic) x 2 arms = 6 measurements a run
    os.environ.setdefault("PLUGINS_EXTRA", "echo=tests.fakes.plugins:EchoExperiment")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.conf import settings

    settings.QUOTA_RUNS_PER_DAY = 10**9  # the bench writes more runs a day than the default quota allows
    from registry.effects import services

    services.effects_recompute_enqueue = lambda finding_id, **options: None  # no broker: the recompute is timed apart


def _finding(tag: str):
    from django.contrib.auth import get_user_model

    from registry.findings.services import claim_create, finding_create
    from registry.reproductions.models import Experiment
    from registry.reproductions.services import params_validate, plugin_resolve

    users = get_user_model().objects
    author = users.create_user(username=f"author-{tag}", password="x")
    other = users.create_user(username=f"other-{tag}", password="x")
    finding = finding_create(user=author, title=f"Bench finding {tag}", kind="fix")
    experiment = Experiment.objects.create(
        finding=finding, plugin="echo", params=params_validate(plugin_resolve("echo"), {}), created_by=author
    )
    claim_create(finding=finding, user=author, metric="risk", direction="decrease", min_relative_effect=0.3)
    claim_create(finding=finding, user=author, metric="skill", direction="non_inferior", margin=0.05)
    return finding, experiment, author, other


def _values(rng: random.Random) -> dict[str, dict[str, float]]:
    risk = rng.lognormvariate(0.0, 0.1)
    skill = 1.0 + rng.gauss(0, 0.02)
    return {
        "baseline": {"risk": risk, "skill": skill, "width": 3.0},
        "intervention": {"risk": risk * rng.lognormvariate(-0.5, 0.1), "skill": skill + rng.gauss(0, 0.01),
                         "width": 3.0 + rng.gauss(0, 0.1)},
    }


def load(n_runs: int, tag: str, *, per_reproduction: int = 1000, seed: int = 0):
    """A finding with ``n_runs`` succeeded runs of one experiment (registry runs by an author and
    by another user on two kinds of hardware, a tenth self-reported), inserted in bulk."""
    from django.db import transaction
    from django.utils import timezone

    from registry.reproductions.models import Measurement, Reproduction, Run

    rng = random.Random(seed)
    finding, experiment, author, other = _finding(tag)
    started = time.perf_counter()
    now = timezone.now()
    with transaction.atomic():
        seeds = list(range(n_runs))
        for index, first in enumerate(range(0, n_runs, per_reproduction)):
            chunk = seeds[first:first + per_reproduction]
            source = "self_reported" if index % 10 == 9 else "registry"
            reproduction = Reproduction.objects.create(
                experiment=experiment, requested_by=author if index % 2 == 0 else other, seeds=chunk, source=source
            )
            hardware = "cpu" if index % 2 == 0 else "NVIDIA A100-SXM4-80GB"
            runs = Run.objects.bulk_create(
                [
                    Run(reproduction=reproduction, seed=s, state=Run.State.SUCCEEDED, attempts=1, progress=1.0,
                        started_at=now, finished_at=now, plugin_version="1.0.0", hardware=hardware)
                    for s in chunk
                ],
                batch_size=5000,
            )
            Measurement.objects.bulk_create(
                [
                    Measurement(run_id=run.pk, arm=arm, metric=metric, value=value)
                    for run in runs
                    for arm, values in _values(rng).items()
                    for metric, value in values.items()
                ],
                batch_size=10000,
            )
    from django.db import connection

    with connection.cursor() as cursor:
        # index-only scans need the visibility map: autovacuum does this after a bulk load
        cursor.execute("VACUUM ANALYZE reproductions_measurement")
        cursor.execute("VACUUM ANALYZE reproductions_run")
    return finding, time.perf_counter() - started


def time_recompute(finding_id: int, reps: int, profile: bool) -> dict:
    from registry.effects.services import finding_effects_recompute

    times = []
    for _ in range(reps):
        started = time.perf_counter()
        data = finding_effects_recompute(finding_id=finding_id)
        times.append(time.perf_counter() - started)
    out = {"seconds": times, "median_s": statistics.median(times), "n_runs": data["n_runs"]}
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        finding_effects_recompute(finding_id=finding_id)
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
        out["profile"] = text.getvalue()
    return out


def payload_sizes(finding_id: int) -> dict:
    from rest_framework.test import APIClient

    from registry.effects.models import FindingEffects
    from registry.effects.services import finding_effects_recompute

    finding_effects_recompute(finding_id=finding_id)
    stored = len(json.dumps(FindingEffects.objects.get(finding_id=finding_id).data))
    client = APIClient()
    response = client.get(f"/api/v1/findings/{finding_id}/effects/")
    assert response.status_code == 200, response.status_code
    detail = client.get(f"/api/v1/findings/{finding_id}/effects/?detail=runs")
    assert detail.status_code == 200, detail.status_code
    return {
        "stored_bytes": stored,
        "effects_response_bytes": len(response.content),
        "detail_response_bytes": len(detail.content),
    }


def write_latency(n_writes: int, batch_size: int) -> dict:
    from rest_framework.test import APIClient

    from registry.reproductions.services import params_validate, plugin_resolve

    finding, experiment, author, _ = _finding("writes")
    client = APIClient()
    client.force_authenticate(author)
    params = params_validate(plugin_resolve("echo"), {})
    rng = random.Random(1)
    url = f"/api/v1/experiments/{experiment.pk}/self-reported-runs/"
    latencies = []
    for seed in range(n_writes):
        body = {"seed": seed, "measurements": _values(rng), "params": params, "hardware": "cpu"}
        started = time.perf_counter()
        response = client.post(url, body, format="json")
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 201, response.content[:300]
    window = min(100, n_writes)
    out = {
        "writes": n_writes,
        "p50_first_ms": 1000 * statistics.median(latencies[:window]),
        "p50_last_ms": 1000 * statistics.median(latencies[-window:]),
        "window": window,
    }
    # The same comparison with the machine's load drift taken out: writes alternate between this
    # finding (n_writes runs and more) and a fresh one (runs 1-100 of its own)
    _, fresh, fresh_author, _ = _finding("writes-fresh")
    fresh_client = APIClient()
    fresh_client.force_authenticate(fresh_author)
    fresh_url = f"/api/v1/experiments/{fresh.pk}/self-reported-runs/"
    big, small = [], []
    for i in range(window):
        pair = ((big, client, url, n_writes + 10_000 + i), (small, fresh_client, fresh_url, i))
        for target, client_, where, seed in pair:
            body = {"seed": seed, "measurements": _values(rng), "params": params, "hardware": "cpu"}
            started = time.perf_counter()
            response = client_.post(where, body, format="json")
            target.append(time.perf_counter() - started)
            assert response.status_code == 201, response.content[:300]
    out["alternating_p50_ms"] = {
        f"finding with {n_writes}+ runs": 1000 * statistics.median(big),
        "fresh finding, runs 1-100": 1000 * statistics.median(small),
    }
    if batch_size:
        runs = [{"seed": n_writes + i, "measurements": _values(rng)} for i in range(batch_size)]
        started = time.perf_counter()
        response = client.post(f"{url}batch/", {"params": params, "hardware": "cpu", "runs": runs}, format="json")
        out["batch_runs"] = batch_size
        out["batch_ms"] = 1000 * (time.perf_counter() - started)
        out["batch_status"] = response.status_code
        out["batch_runs_per_s"] = batch_size / (out["batch_ms"] / 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs of the finding whose recompute is timed")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--payload-runs", type=int, default=1000)
    parser.add_argument("--payload-per-reproduction", type=int, default=1)
    parser.add_argument("--writes", type=int, default=1000, help="self-reported writes on one finding (0: skip)")
    parser.add_argument("--batch", type=int, default=1000, help="runs in the timed batch request (0: skip)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    server = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    base = server.rsplit("/", 1)[0]
    name = f"bench_effects_{os.getpid()}"
    _scratch_database(f"{base}/postgres", name, create=True)
    results: dict = {"database": name}
    try:
        _setup(f"{base}/{name}")
        finding, load_s = load(args.runs, "recompute")
        results["load"] = {"runs": args.runs, "measurements": args.runs * 6, "seconds": load_s}
        print(f"loaded {args.runs} runs x 6 measurements in {load_s:.1f} s")
        results["recompute"] = time_recompute(finding.pk, args.reps, args.profile)
        print(f"recompute of {args.runs} runs: median {results['recompute']['median_s'] * 1000:.0f} ms "
              f"({', '.join(f'{t * 1000:.0f}' for t in results['recompute']['seconds'])} ms)")
        if args.profile:
            print(results["recompute"]["profile"])
        if args.payload_runs:
            # one run per reproduction, as runs reported one request at a time arrive
            small, _ = load(args.payload_runs, "payload", per_reproduction=args.payload_per_reproduction, seed=1)
            results["payload"] = {"runs": args.payload_runs, **payload_sizes(small.pk)}
            print(f"effects of {args.payload_runs} runs: stored {results['payload']['stored_bytes']:,} B, "
                  f"response {results['payload']['effects_response_bytes']:,} B, "
                  f"with ?detail=runs {results['payload']['detail_response_bytes']:,} B")
        if args.writes:
            results["writes"] = write_latency(args.writes, args.batch)
            w = results["writes"]
            print(f"self-reported writes on one finding: p50 {w['p50_first_ms']:.1f} ms (runs 1-{w['window']}) vs "
                  f"{w['p50_last_ms']:.1f} ms (runs {args.writes - w['window'] + 1}-{args.writes})")
            print("alternating writes:", ", ".join(f"{k}: p50 {v:.1f} ms" for k, v in w["alternating_p50_ms"].items()))
            if "batch_ms" in w:
                print(f"one batch of {w['batch_runs']} runs: {w['batch_ms']:.0f} ms "
                      f"({w['batch_runs_per_s']:.0f} runs/s), status {w['batch_status']}")
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            _scratch_database(f"{base}/postgres", name, create=False)
    out = ROOT / "bench" / "results" / "effects_recompute.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({k: v for k, v in results.items()}, indent=2, default=str))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
