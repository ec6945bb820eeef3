"""Read latencies over a registry at scale (issue 11): run after ``bench/load_scale.py``.

    python bench/reads_at_scale.py                    # against registry_scale
    python bench/reads_at_scale.py --database registry_scale --requests 50

In-process: Django's test ``Client`` (the full middleware, URL, DRF and template stack, DEBUG off,
``registry.settings.base``) against the scale database; no HTTP server, so the figures leave out
the network and the WSGI server (a few ms) but include everything the registry does per request.
For each read: a warm-up, then ``--requests`` requests with varied parameters (search words, ids,
tags); p50 / p95 / max in ms, the response size and the number of SQL queries of one request.
The landscape's first (cold) request, which computes the capabilities correlations before they
are cached, is reported on its own. Writes a Markdown table to stdout and JSON to
``bench/results/reads_at_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from load_scale import ROOT, VOCABULARY, WORDS, _database_url, setup_django


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(client: Any, name: str, urls: Callable[[random.Random], str], n: int, rng: random.Random) -> dict:
    from django.db import connection

    for _ in range(2):  # warm-up
        assert client.get(urls(rng)).status_code == 200
    connection.force_debug_cursor = True  # log this request's queries (DEBUG is off)
    connection.queries_log.clear()
    response = client.get(urls(rng))
    n_queries = len(connection.queries_log)
    connection.force_debug_cursor = False
    assert response.status_code == 200, response.content[:300]
    times, sizes = [], []
    for _ in range(n):
        url = urls(rng)
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        sizes.append(len(response.content))
    row = {
        "read": name, "n": n, "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(_percentile(times, 0.95), 1), "max_ms": round(max(times), 1),
        "bytes_median": int(statistics.median(sizes)), "queries": n_queries,
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
    args = parser.parse_args()
    setup_django(_database_url(args.server, args.database))

    from django.conf import settings
    from django.core.cache import cache
    from django.test import Client

    from registry.effects.models import FindingEffects
    from registry.findings.models import Finding, Tag

    assert not settings.DEBUG
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
    client = Client()
    rows = []
    cache.clear()
    start = time.perf_counter()
    cold = client.get("/api/v1/landscape/")
    cold_ms = (time.perf_counter() - start) * 1000
    assert cold.status_code == 200
    print(f"landscape, cold (capabilities correlations computed): {cold_ms:.0f} ms", flush=True)
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
    rows.append(measure(client, "findings list page (dashboard HTML)", lambda r: "/", args.requests, rng))
    rows.append(measure(client, "findings list page, q (dashboard HTML)", lambda r: f"/?q={word(r)}",
                        args.requests, rng))
    result = {
        "database": args.database, "findings": n_findings, "findings_with_effects": n_effects,
        "landscape_cold_ms": round(cold_ms, 1), "client": "django.test.Client in-process, DEBUG off", "reads": rows,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    Path(out / args.json).write_text(json.dumps(result, indent=2))
    print()
    print(f"{n_findings:,} findings, {n_effects:,} with effects; landscape cold: {cold_ms:.0f} ms")
    print()
    print("| read | p50 ms | p95 ms | max ms | response bytes (median) | SQL queries |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['read']} | {row['p50_ms']} | {row['p95_ms']} | {row['max_ms']} | {row['bytes_median']:,} | "
              f"{row['queries']} |")


if __name__ == "__main__":
    main()
