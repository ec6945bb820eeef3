"""Profile one self-reported result write (POST /api/v1/experiments/{id}/self-reported-runs/), or
with ``--request reproduction`` one reproduction request (POST /api/v1/experiments/{id}/reproductions/,
one seed: the dispatch path; its Celery messages go to a scratch Redis database nobody consumes),
under the production settings, with pyinstrument, and count its SQL queries.

    .venv/bin/python bench/profile_ingest.py --writes 300 --output bench/results/profiles/ingest_single.txt
    .venv/bin/python bench/profile_ingest.py --request reproduction --output bench/results/profiles/dispatch.txt

It makes a database of its own on the running PostgreSQL (dropped at the end), migrates it, creates
the benchmark's user, finding and echo experiment, then sends the writes in-process through
Django's full middleware stack (``django.test.Client``; the same views, middleware and settings
as the production server, without gunicorn's and the network's share). The request body is the
one ``bench/perf.py`` sends. Writes the text profile (the writes after a warm-up) and, at its top,
the SQL queries of one write.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.perf import ENVIRONMENT, HARDWARE, MEASUREMENTS, PG_HOST, PG_PORT, PG_USER  # noqa: E402


def _admin(sql: str) -> None:
    subprocess.run(["psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", "postgres", "-qc", sql],
                   check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=300,
                        help="timed writes, then as many profiled ones (after 30 warm-up writes)")
    parser.add_argument("--output", type=Path, required=True, help="the text profile")
    parser.add_argument("--request", choices=["self-reported", "reproduction"], default="self-reported",
                        help="the request to profile (default: one self-reported result)")
    args = parser.parse_args(argv)

    database = f"bench_profile_{os.getpid()}"
    _admin(f"CREATE DATABASE {database}")
    env = {
        "DJANGO_SETTINGS_MODULE": "registry.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/13",
        "CELERY_BROKER_KEY_PREFIX": f"profile{os.getpid()}:",
        "CACHE_KEY_PREFIX": f"profilecache{os.getpid()}",
        "PLUGINS_EXTRA": "echo=tests.fakes.plugins:EchoExperiment",
        "API_THROTTLE_USER": "10000000/minute",
        "API_THROTTLE_REPRODUCTIONS": "10000000/hour",
        "QUOTA_RUNS_PER_DAY": "100000000",
        "QUOTA_ACTIVE_RUNS": "100000000",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        return _profile(args.writes, args.output, args.request)
    finally:
        from django.db import connections

        connections.close_all()
        _admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def _profile(writes: int, output: Path, request: str = "self-reported") -> int:
    import io

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from pyinstrument import Profiler

    out = io.StringIO()
    call_command("create_api_user", "bench", stdout=out)
    token = out.getvalue().strip().split()[-1]
    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="localhost")

    def post(path: str, body: dict, expect: int = 201) -> dict:
        response = client.post(path, json.dumps(body), content_type="application/json")
        assert response.status_code == expect, (path, response.status_code, response.content[:500])
        return response.json()

    finding = post("/api/v1/findings/", {"title": "profile: one finding", "kind": "fix"})
    experiment = post(f"/api/v1/findings/{finding['id']}/experiments/",
                      {"plugin": "echo", "params": {}, "reproduce": False})
    path = f"/api/v1/experiments/{experiment['id']}/self-reported-runs/"
    seed = iter(range(10**9))

    def write() -> None:
        if request == "reproduction":
            post(f"/api/v1/experiments/{experiment['id']}/reproductions/", {"seeds": [next(seed)]}, expect=202)
            return
        post(path, {"seed": next(seed), "measurements": MEASUREMENTS, "params": experiment["params"],
                    "hardware": HARDWARE, "environment": ENVIRONMENT})

    for _ in range(30):
        write()
    with CaptureQueriesContext(connection) as ctx:
        write()
    queries = [q["sql"] for q in ctx.captured_queries]

    # unprofiled first: wall and this process's CPU per write (the CPU figure moves less with the
    # load of a shared machine; PostgreSQL's own share is in the wall figure only)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(writes):
        write()
    wall, cpu = (time.perf_counter() - wall) / writes, (time.process_time() - cpu) / writes

    profiler = Profiler(interval=0.0005)
    started = time.perf_counter()
    profiler.start()
    for _ in range(writes):
        write()
    profiler.stop()
    elapsed = time.perf_counter() - started
    head = [
        f"# {writes} requests ({request}: " + ("POST /api/v1/experiments/{id}/reproductions/, one seed"
                                              if request == "reproduction" else "one self-reported result")
        + "), in-process (django.test.Client, production settings)",
        f"# unprofiled: {wall * 1000:.2f} ms per write, {cpu * 1000:.2f} ms CPU of this process per write",
        f"# {elapsed / writes * 1000:.2f} ms per write (under the profiler); load average "
        f"{tuple(round(x, 2) for x in os.getloadavg())}",
        f"# SQL queries of one write: {len(queries)}",
        *[f"#   {i + 1}. {sql[:300]}" for i, sql in enumerate(queries)],
        "",
    ]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(head) + profiler.output_text(unicode=False, color=False, show_all=False) + "\n")
    print("\n".join(head[:4]))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
