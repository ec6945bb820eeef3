"""Read latencies over a registry at scale (issue 11): run after ``bench/load_scale.py``.

    python bench/reads_at_scale.py                    # against registry_scale
    python bench/reads_at_scale.py --database registry_scale --requests 50

In-process: Django's test ``Client`` (the full middleware, URL, DRF and template stack, DEBUG off,
``registry.settings.base``) against the scale database; no HTTP server, so the figures leave out
the network and the WSGI server (a few ms) but include everything the registry does per request.
For each read: a warm-up, then ``--requests`` requests with varied parameters (search words, ids,
tags); p50 / p95 / max in ms, the response size, the number of SQL queries of one request, and
the CPU time of this process per request (p50 / p95: less sensitive to a busy machine than the
wall clock; PostgreSQL's own time is not in it). The JSON also records the row counts, the settings
module and the load average (1, 5, 15 min) at the start and the end (the machine may be shared).
The landscape's first (cold) request, which computes the capabilities correlations before they
are cached, is reported on its own. Writes a Markdown table to stdout and JSON to
``bench/results/reads_at_scale.json``.

``--production`` runs under ``registry.settings.production`` instead (Redis cache under a key
prefix of this run's own, removed at the end; static files collected into a temporary folder).
``--profile SUFFIX`` also profiles the three reads of issue 11's targets with pyinstrument and
writes text profiles to ``bench/results/profiles/<read>_<SUFFIX>.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from load_scale import ROOT, VOCABULARY, WORDS, _database_url, setup_django

#: The reads profiled with ``--profile``: file name -> URL.
PROFILED = {
    "landscape_api": "/api/v1/landscape/",
    "landscape_page": "/landscape/",
    "findings_list_filter_q": "/api/v1/findings/?kind=theory&q=attention",
}


def _production_env(prefix: str, static_root: str) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "registry.settings.production",
        "DJANGO_SECRET_KEY": "reads-at-scale-" + prefix,
        "DJANGO_ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
        "CACHE_KEY_PREFIX": prefix,
        "DJANGO_STATIC_ROOT": static_root,
        "LOG_LEVEL": "WARNING",
    }


def _drop_cache_keys(prefix: str) -> None:
    """Delete this run's keys from the shared Redis (never the whole database: others use it)."""
    from django.core.cache import cache

    client = cache._cache.get_client(write=True)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def recompute_stored(finding_id: int) -> Callable[[], None]:
    """What a recompute's store does to one finding's effects row, alternating its lean (so the
    landscape's aggregates and page really change): each read after it computes them afresh."""
    from django.db.models.functions import Now

    from registry.effects.models import FindingEffects

    row = FindingEffects.objects.get(finding_id=finding_id)
    leans = [row.data.get("lean") or "neither", "dual" if row.data.get("lean") != "dual" else "neither"]
    turn = [0]

    def store() -> None:
        turn[0] += 1
        data = {**row.data, "lean": leans[turn[0] % 2]}
        FindingEffects.objects.filter(pk=row.pk).update(data=data, computed_at=Now())

    return store


def profile_reads(client: Any, suffix: str, repeats: int) -> None:
    """Text profiles (pyinstrument) of ``repeats`` warm requests of each read in ``PROFILED``."""
    from pyinstrument import Profiler

    out = ROOT / "bench" / "results" / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    for name, url in PROFILED.items():
        assert client.get(url).status_code == 200  # warm
        profiler = Profiler(interval=0.001)
        profiler.start()
        for _ in range(repeats):
            assert client.get(url).status_code == 200
        profiler.stop()
        text = profiler.output_text(unicode=True, color=False, show_all=False)
        (out / f"{name}_{suffix}.txt").write_text(f"# {repeats} requests of GET {url}\n\n{text}")
        print(f"profile: bench/results/profiles/{name}_{suffix}.txt", flush=True)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(
    client: Any, name: str, urls: Callable[[random.Random], str], n: int, rng: random.Random,
    before_each: Callable[[], None] | None = None,
) -> dict:
    """``before_each``: run before every request, outside its time (a write the read follows)."""
    from django.db import connection

    for _ in range(2):  # warm-up
        assert client.get(urls(rng)).status_code == 200
    if before_each:
        before_each()
    connection.force_debug_cursor = True  # log this request's queries (DEBUG is off)
    connection.queries_log.clear()
    response = client.get(urls(rng))
    n_queries = len(connection.queries_log)
    connection.force_debug_cursor = False
    assert response.status_code == 200, response.content[:300]
    times, cpu, sizes = [], [], []
    for _ in range(n):
        url = urls(rng)
        if before_each:
            before_each()
        start, start_cpu = time.perf_counter(), time.process_time()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)  # this process only (not PostgreSQL's)
        assert response.status_code == 200, (url, response.status_code)
        sizes.append(len(response.content))
    row = {
        "read": name, "n": n, "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(_percentile(times, 0.95), 1), "max_ms": round(max(times), 1),
        "bytes_median": int(statistics.median(sizes)), "queries": n_queries,
        "cpu_p50_ms": round(statistics.median(cpu), 1), "cpu_p95_ms": round(_percentile(cpu, 0.95), 1),
    }
    print(f"{name}: {row}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="registry_scale")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--landscape-requests", type=int, default=20)
    parser.add_argument("--json", default="reads_at_scale.json", help="file name under bench/results/")
    parser.add_argument("--production", action="store_true", help="registry.settings.production (Redis cache)")
    parser.add_argument("--profile", metavar="SUFFIX", help="write pyinstrument profiles with this suffix")
    parser.add_argument("--profile-requests", type=int, default=10)
    parser.add_argument("--only-profile", action="store_true", help="profile, then stop (no timings)")
    args = parser.parse_args()
    prefix = f"reads-{uuid.uuid4().hex[:12]}"
    static_root = tempfile.mkdtemp(prefix="reads-static-")
    setup_django(_database_url(args.server, args.database),
                 _production_env(prefix, static_root) if args.production else None)
    try:
        run(args)
    finally:
        if args.production:
            _drop_cache_keys(prefix)
        shutil.rmtree(static_root, ignore_errors=True)


def run(args: argparse.Namespace) -> None:

    from django.conf import settings
    from django.core.cache import cache
    from django.test import Client

    from registry.effects.models import FindingEffects
    from registry.findings.models import Finding, Tag
    from registry.reproductions.models import Measurement, Run

    assert not settings.DEBUG
    load_start = [round(x, 2) for x in os.getloadavg()]
    if args.production:
        from django.core.management import call_command

        call_command("collectstatic", interactive=False, verbosity=0)
    # Count each request's queries: Django clears the query log when a request starts.
    from django.core.signals import request_started
    from django.db import reset_queries

    request_started.disconnect(reset_queries)
    rng = random.Random(1)
    public = list(Finding.objects.filter(visibility="public").order_by("?").values_list("id", flat=True)[:500])
    reproduced = list(
        FindingEffects.objects.filter(finding__visibility="public").order_by("?").values_list("finding_id", flat=True)[
            :500
        ]
    )
    tags = list(Tag.objects.values_list("name", flat=True))
    n_findings = Finding.objects.count()
    n_effects = FindingEffects.objects.count()
    n_runs, n_measurements = Run.objects.count(), Measurement.objects.count()
    client = Client()
    rows = []
    if not args.production:  # production: this run's own key prefix, so nothing of ours is cached yet
        cache.clear()
    start = time.perf_counter()
    cold = client.get("/api/v1/landscape/")
    cold_ms = (time.perf_counter() - start) * 1000
    assert cold.status_code == 200
    print(f"landscape, cold (capabilities correlations computed): {cold_ms:.0f} ms", flush=True)
    if args.profile:
        profile_reads(client, args.profile, args.profile_requests)
        if args.only_profile:
            return
    kinds = ("theory", "fix", "observation")

    def word(r: random.Random) -> str:
        """Half the time a domain word (among the most frequent), else any word of the vocabulary
        (mostly the long tail: a few findings each)."""
        return r.choice(WORDS) if r.random() < 0.5 else r.choice(VOCABULARY)

    rows.append(measure(client, "findings list, kind filter + q (1 word)",
                        lambda r: f"/api/v1/findings/?kind={r.choice(kinds)}&q={word(r)}", args.requests, rng))
    rows.append(measure(client, "findings list, status filter + q (2 words)",
                        lambda r: f"/api/v1/findings/?status=reproduced&q={word(r)}+{word(r)[:4]}",
                        args.requests, rng))
    rows.append(measure(client, "findings list, no filter (page 1)", lambda r: "/api/v1/findings/",
                        args.requests, rng))
    rows.append(measure(client, "finding detail", lambda r: f"/api/v1/findings/{r.choice(public)}/",
                        args.requests, rng))
    rows.append(measure(client, "finding effects",
                        lambda r: f"/api/v1/findings/{r.choice(reproduced)}/effects/", args.requests, rng))
    rows.append(measure(client, "landscape (all findings)", lambda r: "/api/v1/landscape/",
                        args.landscape_requests, rng))
    rows.append(measure(client, "landscape, a tag", lambda r: f"/api/v1/landscape/?tag={r.choice(tags)}",
                        args.landscape_requests, rng))
    rows.append(measure(client, "landscape page (dashboard HTML)", lambda r: "/landscape/",
                        args.landscape_requests, rng))
    store = recompute_stored(reproduced[0])
    rows.append(measure(client, "landscape, each read after a recompute stored", lambda r: "/api/v1/landscape/",
                        args.landscape_requests, rng, before_each=store))
    rows.append(measure(client, "landscape page, each read after a recompute stored", lambda r: "/landscape/",
                        args.landscape_requests, rng, before_each=store))
    # 2 x (n + 1) stores in all, an even number: the finding's lean is back to what it was
    rows.append(measure(client, "findings list page (dashboard HTML)", lambda r: "/", args.requests, rng))
    rows.append(measure(client, "findings list page, q (dashboard HTML)", lambda r: f"/?q={word(r)}",
                        args.requests, rng))
    result = {
        "database": args.database, "findings": n_findings, "findings_with_effects": n_effects,
        "runs": n_runs, "measurements": n_measurements, "settings": os.environ["DJANGO_SETTINGS_MODULE"],
        "load_average_start": load_start, "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "landscape_cold_ms": round(cold_ms, 1), "client": "django.test.Client in-process, DEBUG off", "reads": rows,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    Path(out / args.json).write_text(json.dumps(result, indent=2))
    print()
    print(f"{n_findings:,} findings, {n_effects:,} with effects; landscape cold: {cold_ms:.0f} ms; "
          f"{os.environ['DJANGO_SETTINGS_MODULE']}; load average (1/5/15 min) {load_start} at the start, "
          f"{result['load_average_end']} at the end")
    print()
    print("| read | p50 ms | p95 ms | max ms | response bytes (median) | SQL queries | CPU p50 / p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['read']} | {row['p50_ms']} | {row['p95_ms']} | {row['max_ms']} | {row['bytes_median']:,} | "
              f"{row['queries']} | {row['cpu_p50_ms']} / {row['cpu_p95_ms']} |")


if __name__ == "__main__":
    main()
