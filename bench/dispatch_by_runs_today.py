"""Request -> run started as the requesting user's runs in the last 24 hours grow.

    python bench/dispatch_by_runs_today.py [--requests 25]

Starts the registry as ``bench/perf.py`` does (production settings and server, Celery workers, a
database of its own, the echo plugin), then measures ``perf.py``'s dispatch figure (a one-seed
reproduction, sequential, ``started_at`` minus the request time) with no runs of the user yet,
after 10,000 and after 40,000 self-reported runs by the same user (the batch endpoint, 100 a
request). The reproduction request counts the user's runs of the last 24 hours for the daily quota
(``registry/reproductions/quotas.py``): that count grows with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import perf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=25)
    args = parser.parse_args()
    stack = perf.Stack(tmp=Path(tempfile.mkdtemp(prefix="bench-dispatch-runs-")))
    try:
        registry = perf.start_registry(stack, f"runs{os.getpid()}")
        experiment = registry.new_experiment("dispatch by runs today")
        filler = registry.new_experiment("dispatch by runs today: self-reported runs")
        client = perf.Client(registry.port, registry.headers)
        params = client.request("GET", f"/api/v1/experiments/{filler}/")["params"]
        seeds = iter(range(10**6))

        def dispatch() -> tuple[float, float]:
            started_request = time.time()
            reproduction = client.request("POST", f"/api/v1/experiments/{experiment}/reproductions/",
                                          {"seeds": [next(seeds)]}, expect=202)
            answered = time.time()
            run_id = reproduction["runs"][0]["id"]
            while (run := client.request("GET", f"/api/v1/runs/{run_id}/", expect=200))["state"] in (
                "queued", "running"
            ):
                time.sleep(0.05)
            started = datetime.fromisoformat(run["started_at"]).timestamp()
            return (answered - started_request) * 1000, (started - started_request) * 1000

        def self_report(batches: int) -> None:
            for _ in range(batches):
                client.request("POST", f"/api/v1/experiments/{filler}/self-reported-runs/batch/",
                               {"params": params, "hardware": perf.HARDWARE, "environment": perf.ENVIRONMENT,
                                "runs": [{"seed": next(seeds), "measurements": perf.MEASUREMENTS}
                                         for _ in range(100)]}, expect=201)

        dispatch(), dispatch()  # warm-up: the worker imports the plugins
        print(f"load average at the start: {os.getloadavg()}")
        for label, batches in (("0 runs today", 0), ("10,000 runs today", 100), ("40,000 runs today", 300)):
            self_report(batches)
            rows = [dispatch() for _ in range(args.requests)]
            print(f"{label}: request -> 202 p50 {statistics.median(r[0] for r in rows):.1f} ms; "
                  f"request -> run started p50 {statistics.median(r[1] for r in rows):.1f} ms, "
                  f"p95 {perf.latency_summary([r[1] / 1000 for r in rows])['p95_ms']:.1f} ms", flush=True)
        client.close()
    finally:
        stack.close()


if __name__ == "__main__":
    main()
