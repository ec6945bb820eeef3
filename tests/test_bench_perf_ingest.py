"""bench/perf.py's ingest rows for the registry's batch endpoint: results counted per request of
BATCH_RUNS, their target against MLflow, their requests/s in the table. No servers started."""

from __future__ import annotations

import itertools
import time

from tests.test_bench_perf import perf


def test_load_counts_every_result_of_a_batch_request() -> None:
    calls = []

    def op(client, seed) -> None:
        calls.append(seed)
        time.sleep(0.01)

    one = perf.load(1, {}, op, 1, 0.3, itertools.count(), results_per_op=1)
    batch = perf.load(1, {}, op, 1, 0.3, itertools.count(), results_per_op=50)
    assert one["errors"] == batch["errors"] == 0
    # the same call rate (give or take the machine's noise), fifty results a call
    assert 20 < batch["results_per_s"] / one["results_per_s"] < 125
    assert batch["p50_ms"] >= 10.0  # the latency of one call, not of one result


def test_the_batch_row_has_its_target_and_its_requests_per_second() -> None:
    ingest = {"registry_batch_c1": {"results_per_s": 500.0, "p50_ms": 200.0, "p95_ms": 300.0, "n": 10, "errors": 0},
              "mlflow_c1": {"results_per_s": 20.0, "p50_ms": 50.0, "p95_ms": 80.0, "n": 60, "errors": 0}}
    rows = {r["target"]: r for r in perf.evaluate_targets({"ingest": ingest})}
    batch = rows[f"ingest c=1: registry batch ({perf.BATCH_RUNS} a request) / MLflow results/s"]
    assert (batch["value"], batch["status"]) == (25.0, "PASS")
    assert rows[f"ingest c=8: registry batch ({perf.BATCH_RUNS} a request) / MLflow results/s"]["status"] == "N/A"
    markdown = perf.render_markdown({"figures": {"ingest": ingest}, "targets": []})
    line = next(row for row in markdown.splitlines() if row.startswith("| registry batch"))
    assert f"| 1 | 500.0 | {perf.fmt(500.0 / perf.BATCH_RUNS)} |" in line
