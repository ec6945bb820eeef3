"""The one benchmark command: the registry side by side with MLflow and a bare DRF app.

    .venv/bin/python bench/perf.py            # the full run (about 10 minutes on 2 busy cores)
    .venv/bin/python bench/perf.py --quick    # short durations, a 200-write growth curve

What it starts (and stops again, with the databases and Redis keys it made, also on Ctrl-C or a
failure): on the running PostgreSQL (127.0.0.1:5432) three databases of its own; the registry under
its production server and settings (``gunicorn registry.asgi:application -k
registry.asgi_worker.Worker``, 2 worker processes, migrated first) with real Celery workers (``cpu``
and ``maintenance`` queues) on the running Redis; ``mlflow server`` (pinned version, installed once
into ``bench/.venv-mlflow``) with a PostgreSQL backend store and 2 workers; the bare DRF app of
``bench/bare_drf`` (gunicorn, 2 uvicorn workers, no authentication); a bare Celery worker. One
client harness (threads, one keep-alive HTTP connection each) drives all three servers.

Figures: results/s for recording one result at concurrency 1 and 8 with p50/p95 (median of 3
repetitions), the p50 per write on one finding (one MLflow experiment) over a growth curve, request
-> run started against a bare Celery round trip, server memory (RSS); then, with the servers
stopped, ``bench/worker_overhead.py`` (worker overhead, small-run throughput; its text output is
parsed) and ``bench/load_scale.py`` + ``bench/reads_at_scale.py`` on a small database of its own
(``--reads-findings``), when those scripts are present. Writes ``bench/results/perf.json`` and
``bench/results/perf.md``; a full run (or ``--benchmarks-md``) also rewrites ``BENCHMARKS.md`` with
the targets of issue 11 and PASS/MISS.

The helpers above ``main`` (percentiles, ratios, targets, rendering) are pure and unit-tested in
``tests/test_bench_perf.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import itertools
import json
import math
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
MLFLOW_VENV = ROOT / "bench" / ".venv-mlflow"
MLFLOW_REQUIREMENTS = ["mlflow==3.17.2", "psycopg2-binary==2.9.13"]
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 13
SERVER_WORKERS = 2

# The same result for every server: 2 arms x 3 metrics, the parameters used, hardware, environment.
MEASUREMENTS = {
    "baseline": {"risk": 1.0, "skill": 1.0, "width": 3.0},
    "intervention": {"risk": 0.5, "skill": 1.0, "width": 3.0},
}
HARDWARE = "cpu"
ENVIRONMENT = {"torch": "2.4.0", "host": "bench"}
# Results per request of the registry's batch endpoint (self-reported-runs/batch/), MLflow's
# log-batch counterpart: the registry's results/s beyond one request a result.
BATCH_RUNS = 100

# Targets of issue 11 (ratios measured in the same run).
INGEST_VS_MLFLOW_MIN = 5.0
INGEST_VS_DRF_MIN = 0.8
GROWTH_MAX_RATIO = 1.2
DISPATCH_MAX_EXTRA_MS = 20.0
WORKER_OVERHEAD_MAX_MS = 50.0
THROUGHPUT_MIN_FRACTION = 0.8


# --------------------------------------------------------------------------------------------
# Pure helpers (unit-tested)
# --------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's
    default); NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / max in milliseconds and the count."""
    return {
        "n": len(latencies_s),
        "p50_ms": percentile(latencies_s, 50) * 1000,
        "p95_ms": percentile(latencies_s, 95) * 1000,
        "max_ms": max(latencies_s) * 1000 if latencies_s else math.nan,
    }


def median_of(reps: Sequence[dict[str, Any]], key: str) -> float:
    """The median of one figure over repetitions (NaN ignored; NaN when none)."""
    values = [r[key] for r in reps if r.get(key) is not None and not math.isnan(r[key])]
    return statistics.median(values) if values else math.nan


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or math.isnan(numerator) or math.isnan(denominator):
        return None
    if denominator == 0:
        return None
    return numerator / denominator


def window_p50_ms(latencies_s: Sequence[float], first: int, last: int) -> float:
    """p50 in ms of the writes numbered first..last (1-based, inclusive); NaN if out of range."""
    chunk = latencies_s[first - 1 : last]
    if first < 1 or len(chunk) < last - first + 1:
        return math.nan
    return percentile(chunk, 50) * 1000


def growth_windows(n: int) -> list[tuple[int, int]]:
    """The 100-write windows reported on a growth curve of n writes: 1-100, the middle, the last."""
    if n < 100:
        return [(1, n)] if n else []
    windows = [(1, 100)]
    if n >= 500:
        windows.append((401, 500))
    if n >= 200:
        windows.append((n - 99, n))
    return windows


def target(name: str, value: float | None, op: str, threshold: float, unit: str = "", note: str = "") -> dict:
    """One target row: PASS when ``value op threshold`` holds, MISS when not, N/A without a value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        status = "N/A"
    elif op == ">=":
        status = "PASS" if value >= threshold else "MISS"
    elif op == "<=":
        status = "PASS" if value <= threshold else "MISS"
    elif op == "<":
        status = "PASS" if value < threshold else "MISS"
    else:
        raise ValueError(f"unknown comparison {op!r}")
    return {"target": name, "value": value, "op": op, "threshold": threshold, "unit": unit, "status": status,
            "note": note}


def evaluate_targets(figures: dict[str, Any]) -> list[dict]:
    """The targets of issue 11 from one run's figures (see ``collect`` for their shape)."""
    ingest = figures.get("ingest", {})
    rows = []
    for c in (1, 8):
        registry = ingest.get(f"registry_one_finding_c{c}", {}).get("results_per_s")
        mlflow = ingest.get(f"mlflow_c{c}", {}).get("results_per_s")
        drf = ingest.get(f"bare_drf_c{c}", {}).get("results_per_s")
        rows.append(target(f"ingest c={c}: registry / MLflow results/s", ratio(registry, mlflow), ">=",
                           INGEST_VS_MLFLOW_MIN, "x"))
        rows.append(target(f"ingest c={c}: registry / bare DRF POST results/s", ratio(registry, drf), ">=",
                           INGEST_VS_DRF_MIN, "x"))
        batch = ingest.get(f"registry_batch_c{c}", {}).get("results_per_s")
        rows.append(target(f"ingest c={c}: registry batch ({BATCH_RUNS} a request) / MLflow results/s",
                           ratio(batch, mlflow), ">=", INGEST_VS_MLFLOW_MIN, "x"))
    growth = figures.get("growth", {}).get("registry", {})
    rows.append(target("p50 per write, last 100 / first 100 writes on one finding",
                       ratio(growth.get("late_p50_ms"), growth.get("early_p50_ms")), "<=", GROWTH_MAX_RATIO, "x",
                       note=growth.get("windows_label", "")))
    dispatch = figures.get("dispatch", {})
    registry_p50 = dispatch.get("registry", {}).get("to_started", {}).get("p50_ms")
    celery_p50 = dispatch.get("bare_celery", {}).get("round_trip", {}).get("p50_ms")
    extra = None if registry_p50 is None or celery_p50 is None else registry_p50 - celery_p50
    rows.append(target("request -> run started p50, minus bare Celery round trip p50", extra, "<=",
                       DISPATCH_MAX_EXTRA_MS, "ms"))
    overhead_part = figures.get("worker_overhead", {})
    overhead = overhead_part.get("figures", {})
    overhead_note = "" if overhead else overhead_part.get("note", "not run")
    rows.append(target("worker overhead per run (p50, task start -> result committed minus the plugin)",
                       _first_number(overhead, OVERHEAD_KEYS), "<", WORKER_OVERHEAD_MAX_MS, "ms", overhead_note))
    rows.append(target("small-run throughput / ideal (2 processes, 50 ms plugin)",
                       _first_number(overhead, THROUGHPUT_KEYS), ">=", THROUGHPUT_MIN_FRACTION, "x", overhead_note))
    reads_part = figures.get("reads_at_scale", {})
    reads = reads_part.get("figures", {})
    reads_note = reads_part.get("scale", "") if reads else reads_part.get("note", "not run")
    for label, keys, limit in READ_TARGETS:
        rows.append(target(label, _first_number(reads, keys), "<", limit, "ms", reads_note))
    return rows


# Keys looked up in the JSON that bench/worker_overhead.py and bench/reads_at_scale.py write (their
# authors' names are not fixed yet: the first present wins; absent: N/A with the script's output kept).
OVERHEAD_KEYS = ("overhead_p50_ms", "overhead_ms", "worker_overhead_p50_ms", "worker_overhead_ms")
THROUGHPUT_KEYS = ("throughput_fraction", "throughput_ratio", "fraction_of_ideal", "throughput_vs_ideal")
READ_MAX_MS = 50.0
LANDSCAPE_MAX_MS = 200.0
READ_TARGETS = (
    ("findings list with a filter and q, p95", ("list_search_p95_ms",), READ_MAX_MS),
    ("finding detail p95", ("detail_p95_ms",), READ_MAX_MS),
    ("finding effects p95", ("effects_p95_ms",), READ_MAX_MS),
    ("landscape (all findings) p95", ("landscape_p95_ms",), LANDSCAPE_MAX_MS),
)


def _first_number(data: Any, keys: Sequence[str]) -> float | None:
    """The first of keys found (at any depth) in a JSON document with a number value."""
    if isinstance(data, dict):
        for key in keys:
            value = data.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        for value in data.values():
            found = _first_number(value, keys)
            if found is not None:
                return found
    elif isinstance(data, list):
        for value in data:
            found = _first_number(value, keys)
            if found is not None:
                return found
    return None


def parse_worker_overhead(text: str) -> dict[str, Any]:
    """Figures from bench/worker_overhead.py's text output (it has no JSON output): per start mode
    the task's overhead (task start -> result committed, minus the plugin's time) and the full path,
    and the small-run throughput with its fraction of the ideal 40 runs/s. The first mode listed
    gives ``overhead_p50_ms`` / ``throughput_fraction``."""
    import re

    out: dict[str, Any] = {"overhead": {}, "throughput": {}}
    mode = None
    last_throughput = "?"
    number = r"([0-9][0-9,]*\.?[0-9]*)"
    for line in text.splitlines():
        if m := re.match(r"^\(a\)\s+(\S+)\s+\d+ sequential runs", line):
            mode = m.group(1)
            out["overhead"].setdefault(mode, {})
        elif m := re.match(r"^\((?:b|c|d)\)", line):
            mode = None
        if m := re.match(r"^\(b\)\s+(\S+)\s+(\d+) runs of", line):
            out["throughput"].setdefault(m.group(1), {"runs": int(m.group(2))})
            last_throughput = m.group(1)
        if m := re.search(number + r" runs/s first claim -> last finished", line):
            rate = float(m.group(1).replace(",", ""))
            out["throughput"].setdefault(last_throughput, {}).update(
                {"runs_per_s": rate, "fraction_of_ideal": rate / 40})
        if mode and (m := re.search(r"task start -> result committed, minus plugin time:\s+p50\s+" + number
                                    + r" ms\s+p95\s+" + number, line)):
            out["overhead"][mode].setdefault("task_p50_ms", float(m.group(1).replace(",", "")))
            out["overhead"][mode].setdefault("task_p95_ms", float(m.group(2).replace(",", "")))
        if mode and (m := re.search(r"request -> finished_at.*?p50\s+" + number + r" ms\s+p95\s+" + number, line)):
            out["overhead"][mode].setdefault("full_p50_ms", float(m.group(1).replace(",", "")))
            out["overhead"][mode].setdefault("full_p95_ms", float(m.group(2).replace(",", "")))
    firsts = [v for v in out["overhead"].values() if "task_p50_ms" in v]
    if firsts:
        out["overhead_p50_ms"] = firsts[0]["task_p50_ms"]
    rates = [v for v in out["throughput"].values() if "fraction_of_ideal" in v]
    if rates:
        out["throughput_fraction"] = rates[0]["fraction_of_ideal"]
    return out if firsts or rates else {}


def reads_figures(result: dict[str, Any]) -> dict[str, Any]:
    """The targets' figures from bench/reads_at_scale.py's JSON (``reads``: rows with ``read`` and
    ``p95_ms``): the slowest findings-list-with-``q`` p95, detail, effects and landscape p95."""
    rows = {row.get("read", ""): row for row in result.get("reads", []) if isinstance(row, dict)}
    import re

    out: dict[str, Any] = {"findings": result.get("findings"),
                           "findings_with_effects": result.get("findings_with_effects")}
    searches = [r["p95_ms"] for name, r in rows.items()
                if name.startswith("findings list") and re.search(r"\bq\b", name)
                and isinstance(r.get("p95_ms"), int | float)]
    if searches:
        out["list_search_p95_ms"] = max(searches)
    for key, name in (("detail_p95_ms", "finding detail"), ("effects_p95_ms", "finding effects"),
                      ("landscape_p95_ms", "landscape (all findings)")):
        if isinstance(rows.get(name, {}).get("p95_ms"), int | float):
            out[key] = rows[name]["p95_ms"]
    out["reads"] = list(rows.values())
    return out


def fmt(value: Any, digits: int = 1) -> str:
    """A number for a table: '-' when missing, thousands separators, fixed digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; cells are str()-ed and pipes escaped."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: dict[str, Any], with_meta: bool = True, targets_first: bool = False) -> str:
    """The results of one run as Markdown: the figures side by side and the targets (last, or first)."""
    fig = report.get("figures", {})
    out = [f"# Performance: the registry beside MLflow and a bare DRF app ({report.get('mode', '?')} run)", ""]
    meta = report.get("meta", {})
    if meta and with_meta:
        out += [f"- date: {meta.get('date', '?')}", f"- command: `{meta.get('command', '?')}`",
                f"- machine: {meta.get('machine', '?')}", f"- servers: {meta.get('servers', '?')}", ""]
    targets = ["## Targets (issue 11)", "", render_targets(report.get("targets", [])), ""]
    if targets_first:
        out += targets
    ingest = fig.get("ingest", {})
    if ingest:
        out += ["## Recording one result", "",
                "results/s (median of the repetitions), p50 / p95 latency of one result (MLflow: create run "
                f"+ log-batch + update to FINISHED, 3 requests; registry batch: one request of {BATCH_RUNS} results)",
                ""]
        rows = []
        for key, label in INGEST_ROWS:
            for c in (1, 8):
                r = ingest.get(f"{key}_c{c}")
                if r:
                    requests = REQUESTS_PER_RESULT.get(key, 1) * r.get("results_per_s", math.nan)
                    rows.append([label, c, fmt(r.get("results_per_s")), fmt(requests), fmt(r.get("p50_ms")),
                                 fmt(r.get("p95_ms")), r.get("errors", 0), r.get("n", 0)])
        out += [markdown_table(["server", "concurrency", "results/s", "requests/s", "p50 ms", "p95 ms", "errors",
                                "results"], rows), ""]
    growth = fig.get("growth", {})
    if growth:
        out += ["## Growth: p50 per write on one finding / one MLflow experiment", ""]
        windows = sorted({w for g in growth.values() for w in g.get("windows", {})}, key=lambda w: int(w.split("-")[0]))
        rows = [[name, *[fmt(g.get("windows", {}).get(w)) for w in windows]] for name, g in growth.items()]
        out += [markdown_table(["server", *[f"writes {w} (ms)" for w in windows]], rows), ""]
    dispatch = fig.get("dispatch", {})
    if dispatch:
        out += ["## Dispatch", ""]
        rows = []
        for name, label in (("to_started", "registry: request -> run started"),
                            ("answer_to_started", "registry: 202 answer received -> run started"),
                            ("to_finished", "registry: request -> result stored")):
            d = dispatch.get("registry", {}).get(name)
            if d:
                rows.append([label, fmt(d.get("p50_ms")), fmt(d.get("p95_ms")), d.get("n")])
        for name, label in (("round_trip", "bare Celery: round trip (send -> result)"),
                            ("to_started", "bare Celery: send -> task started")):
            d = dispatch.get("bare_celery", {}).get(name)
            if d:
                rows.append([label, fmt(d.get("p50_ms")), fmt(d.get("p95_ms")), d.get("n")])
        out += [markdown_table(["path", "p50 ms", "p95 ms", "n"], rows), ""]
    memory = fig.get("memory", {})
    if memory:
        out += ["## Server memory (RSS after the ingest runs)", ""]
        rows = [[name, fmt(m.get("total_mb"), 0), m.get("processes"),
                 ", ".join(fmt(x, 0) for x in m.get("each_mb", []))] for name, m in memory.items()]
        out += [markdown_table(["processes", "total MB", "count", "each MB"], rows), ""]
    for key, title in (("worker_overhead", "Worker overhead and small-run throughput (bench/worker_overhead.py)"),
                       ("reads_at_scale", "Reads at scale (bench/reads_at_scale.py)")):
        part = fig.get(key)
        if part:
            out += [f"## {title}", "", part.get("note", "")]
            if part.get("command"):
                out += ["", f"command: `{part['command']}`"]
            figures = part.get("figures") or {}
            numbers = [[k, fmt(v, 2)] for k, v in figures.items() if isinstance(v, int | float)]
            if numbers:
                out += ["", markdown_table(["figure read from it", "value"], numbers)]
            reads = [r for r in figures.get("reads", []) if isinstance(r, dict)]
            if reads:
                out += ["", markdown_table(["read", "p50 ms", "p95 ms", "max ms", "response bytes (median)"],
                                           [[r.get("read"), fmt(r.get("p50_ms")), fmt(r.get("p95_ms")),
                                             fmt(r.get("max_ms")), fmt(r.get("bytes_median"), 0)] for r in reads])]
            elif part.get("output_tail"):
                tail = part["output_tail"].strip()
                tail = tail.rsplit("\n\n", 1)[-1] if len(tail.rsplit("\n\n", 1)[-1]) > 200 else tail  # its summary
                out += ["", "Its output (tail):", "", "```", tail, "```"]
            out.append("")
    if not targets_first:
        out += targets
    notes = report.get("notes", [])
    if notes:
        out += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(out)


REQUESTS_PER_RESULT = {  # MLflow: runs/create + runs/log-batch + runs/update
    "mlflow": 3, "registry_batch": 1 / BATCH_RUNS, "registry_before_batch": 1 / BATCH_RUNS,
}
INGEST_ROWS = (
    ("registry_one_finding", "registry, one finding"),
    ("registry_spread", "registry, spread over 8 findings"),
    ("registry_batch", f"registry batch ({BATCH_RUNS} results a request), one finding"),
    ("registry_before_one_finding", "registry before (--baseline-root), one finding"),
    ("registry_before_spread", "registry before (--baseline-root), spread over 8 findings"),
    ("registry_before_batch", f"registry before (--baseline-root), batch of {BATCH_RUNS}"),
    ("mlflow", "MLflow, one experiment"),
    ("bare_drf", "bare DRF POST"),
)


def render_targets(rows: Sequence[dict]) -> str:
    """The targets as a Markdown table with PASS / MISS / N/A."""
    def value(row: dict) -> str:
        digits = 2 if row["unit"] == "x" else 1
        return "-" if row["value"] is None else f"{fmt(row['value'], digits)} {row['unit']}".strip()

    def goal(row: dict) -> str:
        return f"{row['op']} {fmt(row['threshold'], 2 if row['unit'] == 'x' else 0)} {row['unit']}".strip()

    table = [[r["target"], value(r), goal(r), r["status"], r.get("note", "")] for r in rows]
    return markdown_table(["target", "measured", "goal", "status", "note"], table)


def render_benchmarks_md(report: dict[str, Any]) -> str:
    """BENCHMARKS.md: how to run, the machine, the command, the date, then the latest results."""
    meta = report.get("meta", {})
    head = [
        "# Benchmarks",
        "",
        "The latest run of the one benchmark command (issue 11): the registry under its production server",
        "beside MLflow and a bare DRF app, every server with 2 worker processes on the same PostgreSQL, one",
        "client harness. Regenerate with:",
        "",
        "```bash",
        ".venv/bin/python bench/perf.py            # full run, rewrites this file",
        ".venv/bin/python bench/perf.py --quick    # short run: bench/results/perf.md and perf.json only",
        "```",
        "",
        f"- **date**: {meta.get('date', '?')}",
        f"- **command**: `{meta.get('command', '?')}`",
        f"- **machine**: {meta.get('machine', '?')}",
        f"- **git**: {meta.get('git', '?')}",
        f"- **servers**: {meta.get('servers', '?')}",
        f"- **mode**: {report.get('mode', '?')} run, {meta.get('duration_s', '?')} s; load average (1, 5, 15 min) "
        f"{meta.get('load_average_at_start', '?')} at the start, {meta.get('load_average_at_end', '?')} at the end "
        f"on {os.cpu_count()} CPUs",
        "",
    ]
    body = render_markdown(report, with_meta=False, targets_first=True).split("\n", 2)[2]  # without its heading
    return "\n".join(head) + "\n" + body


# --------------------------------------------------------------------------------------------
# Processes, databases, ports: everything started is stopped again
# --------------------------------------------------------------------------------------------


class BenchError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """PR_SET_PDEATHSIG: a child is sent SIGTERM if this process dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class Stack:
    """What one run started: process groups, databases, Redis key prefixes, temporary folders."""

    tmp: Path
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    redis_prefixes: list[str] = field(default_factory=list)

    def spawn(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509
        log.close()
        self.procs.append((name, proc))
        return proc

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self, name: str) -> None:
        for n, proc in list(self.procs):
            if n == name:
                _kill_group(proc)
                self.procs.remove((n, proc))

    def create_database(self, name: str) -> str:
        with _pg() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"

    def close(self) -> None:
        for _name, proc in reversed(self.procs):
            _kill_group(proc)
        self.procs.clear()
        for name in self.databases:
            try:
                with _pg() as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001 - report and go on cleaning
                print(f"perf: could not drop database {name}: {exc}", file=sys.stderr)
        self.databases.clear()
        if self.redis_prefixes:
            try:
                import redis

                for db in (REDIS_DB, 1):
                    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
                    for prefix in self.redis_prefixes:
                        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                        for i in range(0, len(keys), 500):
                            client.delete(*keys[i : i + 500])
            except Exception as exc:  # noqa: BLE001
                print(f"perf: could not delete the Redis keys: {exc}", file=sys.stderr)
            self.redis_prefixes.clear()


def _kill_group(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the process group (it leads its own session), then SIGKILL what is left."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    if pgid is not None:
        # the leader may be gone while its children (gunicorn/celery workers) still run
        deadline = time.monotonic() + 5
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies, which a container's init may never
    reap, do not count)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":  # state ppid pgrp ...
            return True
    return False


@contextlib.contextmanager
def _pg(dbname: str = "postgres") -> Iterator[Any]:
    import psycopg

    conn = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True, connect_timeout=5)
    try:
        yield conn
    finally:
        conn.close()


def session_rss_mb(session_leader: int) -> list[float]:
    """RSS in MB of every live process in the session led by session_leader (Linux /proc)."""
    sizes = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) != session_leader:  # fields after the name: state ppid pgrp session ...
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        except (OSError, IndexError, ValueError):
            continue
    return sorted(sizes, reverse=True)


# --------------------------------------------------------------------------------------------
# The client harness
# --------------------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects once when the server closed it."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method: str, path: str, body: Any = None, expect: int | tuple[int, ...] = (200, 201)) -> Any:
        data = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=data, headers=self.headers)
                response = self.conn.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt:
                    raise
        expected = (expect,) if isinstance(expect, int) else expect
        if response.status not in expected:
            raise BenchError(f"{method} {path}: {response.status} {payload[:300]!r}")
        return json.loads(payload) if payload else None

    def close(self) -> None:
        self.conn.close()


Op = Callable[[Client, int], None]


def load(port: int, headers: dict[str, str], op: Op, concurrency: int, duration_s: float,
         seeds: Iterator[int], results_per_op: int = 1) -> dict[str, Any]:
    """Run op in `concurrency` threads, each on its own connection, for duration_s; warm-up of one
    op per thread first (not counted). Returns results/s (``results_per_op`` a call), p50/p95 of
    one call and the error count."""
    clients = [Client(port, headers) for _ in range(concurrency)]
    try:
        first_error: list[str] = []
        for client in clients:
            try:
                op(client, next(seeds))
            except (BenchError, OSError, http.client.HTTPException) as exc:
                first_error.append(f"warm-up: {str(exc)[:300]}")
        latencies: list[list[float]] = [[] for _ in clients]
        errors = [0] * concurrency
        start = time.perf_counter()
        stop_at = start + duration_s
        ends = [start] * concurrency

        def worker(i: int) -> None:
            client = clients[i]
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    op(client, next(seeds))
                except (BenchError, OSError, http.client.HTTPException) as exc:
                    errors[i] += 1
                    if not first_error:
                        first_error.append(str(exc)[:300])
                    continue
                latencies[i].append(time.perf_counter() - t0)
            ends[i] = time.perf_counter()

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = max(ends) - start
        flat = [x for per in latencies for x in per]
        return {"results_per_s": len(flat) * results_per_op / elapsed if elapsed > 0 else math.nan,
                **latency_summary(flat),
                "errors": sum(errors), "first_error": first_error[0] if first_error else None,
                "elapsed_s": elapsed}
    finally:
        for client in clients:
            client.close()


def aggregate_reps(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Repetitions of one load: the median of each figure, the counts summed, every rep kept."""
    return {
        "results_per_s": median_of(runs, "results_per_s"),
        "p50_ms": median_of(runs, "p50_ms"),
        "p95_ms": median_of(runs, "p95_ms"),
        "n": sum(r["n"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "first_error": next((r["first_error"] for r in runs if r["first_error"]), None),
        "reps": runs,
    }


# --------------------------------------------------------------------------------------------
# The three servers
# --------------------------------------------------------------------------------------------


def wait_http(stack: Stack, name: str, proc: subprocess.Popen, port: int, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}:\n{stack.log_tail(name)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            if status < 500:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise BenchError(f"{name} did not answer on port {port} within {timeout_s:.0f} s:\n{stack.log_tail(name)}")


def run_checked(cmd: list[str], env: dict[str, str], what: str, timeout_s: float = 600, cwd: Path = ROOT) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode:
        raise BenchError(f"{what} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done.stdout


@dataclass
class Registry:
    port: int
    token: str
    experiment_params: dict
    one_experiment: int
    spread_experiments: list[int]
    env: dict[str, str]
    pid: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def new_experiment(self, title: str) -> int:
        client = Client(self.port, self.headers)
        try:
            finding = client.request("POST", "/api/v1/findings/", {"title": title, "kind": "fix"}, expect=201)
            experiment = client.request("POST", f"/api/v1/findings/{finding['id']}/experiments/",
                                        {"plugin": "echo", "params": {}, "reproduce": False}, expect=201)
        finally:
            client.close()
        return experiment["id"]

    def write_op(self, experiment: int | Callable[[], int]) -> Op:
        def op(client: Client, seed: int) -> None:
            eid = experiment() if callable(experiment) else experiment
            client.request("POST", f"/api/v1/experiments/{eid}/self-reported-runs/",
                           {"seed": seed % 2**31, "measurements": MEASUREMENTS, "params": self.experiment_params,
                            "hardware": HARDWARE, "environment": ENVIRONMENT}, expect=201)
        return op

    def batch_op(self, experiment: int, runs: int = BATCH_RUNS) -> Op:
        """`runs` results in one request of the batch endpoint (the batch's params, hardware and
        environment; each run its seed and the same measurements)."""
        def op(client: Client, seed: int) -> None:
            client.request("POST", f"/api/v1/experiments/{experiment}/self-reported-runs/batch/",
                           {"params": self.experiment_params, "hardware": HARDWARE, "environment": ENVIRONMENT,
                            "runs": [{"seed": (seed * runs + i) % 2**31, "measurements": MEASUREMENTS}
                                     for i in range(runs)]}, expect=201)
        return op


def start_registry(stack: Stack, tag: str, root: Path = ROOT, label: str = "registry") -> Registry:
    """The registry of the source tree `root` (the working tree, or with --baseline-root another
    checkout, started beside it: `label` names its processes)."""
    suffix = label.removeprefix("registry")
    prefix = f"perf{tag}{suffix}:"
    stack.redis_prefixes += [prefix, f"perfcache{tag}{suffix}"]
    var = stack.tmp / f"{label}-var"
    var.mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "registry.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": stack.create_database(f"bench_registry_{tag}{suffix.replace('-', '_')}"),
        "CELERY_BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
        "CELERY_BROKER_KEY_PREFIX": prefix,
        "CACHE_KEY_PREFIX": f"perfcache{tag}{suffix}",
        "REGISTRY_VAR_DIR": str(var),
        "PLUGINS_EXTRA": "echo=tests.fakes.plugins:EchoExperiment",
        # the benchmark's one user sends far more than the production defaults allow a person
        "API_THROTTLE_USER": "10000000/minute",
        "API_THROTTLE_REPRODUCTIONS": "10000000/hour",
        "QUOTA_RUNS_PER_DAY": "100000000",
        "QUOTA_ACTIVE_RUNS": "1000000",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(root),
    }
    python = sys.executable
    run_checked([python, "manage.py", "migrate", "-v0"], env, f"{label} migrate", cwd=root)
    token = run_checked([python, "manage.py", "create_api_user", "bench"], env, "create_api_user",
                        cwd=root).strip().split()[-1]
    port = free_port()
    server = stack.spawn(label, [
        str(Path(python).parent / "gunicorn"), "registry.asgi:application", "-k", "registry.asgi_worker.Worker",
        "--bind", f"127.0.0.1:{port}", "--workers", str(SERVER_WORKERS), "--timeout", "60"], env, cwd=root)
    # the production layout: run queues (cpu) and maintenance (effects recomputes) on their own workers
    stack.spawn(f"celery-cpu{suffix}", [python, "-m", "celery", "-A", "worker", "worker", "-Q", "cpu",
                                        "--concurrency", str(SERVER_WORKERS), "--loglevel", "WARNING", "-n",
                                        f"cpu-{tag}{suffix}@%h"], env, cwd=root)
    stack.spawn(f"celery-maintenance{suffix}", [python, "-m", "celery", "-A", "worker", "worker", "-Q",
                                                "maintenance", "--concurrency", "1", "--loglevel", "WARNING", "-n",
                                                f"maint-{tag}{suffix}@%h"], env, cwd=root)
    wait_http(stack, label, server, port, "/healthz", 120)
    registry = Registry(port=port, token=token, experiment_params={}, one_experiment=0, spread_experiments=[],
                        env=env, pid=server.pid)
    registry.one_experiment = registry.new_experiment("perf: one finding")
    client = Client(port, registry.headers)
    try:
        registry.experiment_params = client.request("GET", f"/api/v1/experiments/{registry.one_experiment}/")["params"]
    finally:
        client.close()
    registry.spread_experiments = [registry.new_experiment(f"perf: spread {i}") for i in range(8)]
    return registry


def ensure_mlflow_venv() -> Path:
    """bench/.venv-mlflow with the pinned MLflow, created once and reused."""
    python = MLFLOW_VENV / "bin" / "python"
    wanted = MLFLOW_REQUIREMENTS[0].split("==")[1]
    if python.exists():
        check = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('mlflow'))"],
                               capture_output=True, text=True)
        if check.returncode == 0 and check.stdout.strip() == wanted:
            return MLFLOW_VENV
    print(f"perf: installing {' '.join(MLFLOW_REQUIREMENTS)} into {MLFLOW_VENV} (once)", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *MLFLOW_REQUIREMENTS], check=True)
    return MLFLOW_VENV


@dataclass
class Mlflow:
    port: int
    experiment_id: str
    pid: int

    def new_experiment(self, name: str) -> str:
        client = Client(self.port)
        try:
            return client.request("POST", "/api/2.0/mlflow/experiments/create", {"name": name})["experiment_id"]
        finally:
            client.close()

    def write_op(self, experiment_id: str, params: dict) -> Op:
        """MLflow's natural equivalent of recording one result: create a run, log the same metrics,
        parameters and tags in one log-batch, mark the run FINISHED (3 requests)."""
        params_list = [{"key": k, "value": str(v)} for k, v in params.items()]

        def op(client: Client, seed: int) -> None:
            now = int(time.time() * 1000)
            run = client.request("POST", "/api/2.0/mlflow/runs/create",
                                 {"experiment_id": experiment_id, "start_time": now, "run_name": f"seed-{seed}"})
            run_id = run["run"]["info"]["run_id"]
            metrics = [{"key": f"{arm}.{metric}", "value": value, "timestamp": now, "step": 0}
                       for arm, values in MEASUREMENTS.items() for metric, value in values.items()]
            tags = [{"key": "hardware", "value": HARDWARE}, {"key": "environment", "value": json.dumps(ENVIRONMENT)},
                    {"key": "seed", "value": str(seed)}]
            client.request("POST", "/api/2.0/mlflow/runs/log-batch",
                           {"run_id": run_id, "metrics": metrics, "params": params_list, "tags": tags})
            client.request("POST", "/api/2.0/mlflow/runs/update",
                           {"run_id": run_id, "status": "FINISHED", "end_time": int(time.time() * 1000)})
        return op


def start_mlflow(stack: Stack, tag: str) -> Mlflow:
    venv = ensure_mlflow_venv()
    database = stack.create_database(f"bench_mlflow_{tag}").replace("postgres://", "postgresql+psycopg2://", 1)
    artifacts = stack.tmp / "mlflow-artifacts"
    artifacts.mkdir()
    port = free_port()
    # the tracking server alone: its job runner (huey consumers for GenAI jobs) takes no part in
    # recording runs, so it is left off (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}", "MLFLOW_HOME": str(stack.tmp),
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    server = stack.spawn("mlflow", [
        str(venv / "bin" / "mlflow"), "server", "--backend-store-uri", database, "--default-artifact-root",
        str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", str(SERVER_WORKERS)], env)
    wait_http(stack, "mlflow", server, port, "/health", 300)
    mlflow = Mlflow(port=port, experiment_id="", pid=server.pid)
    mlflow.experiment_id = mlflow.new_experiment("perf-one-experiment")
    return mlflow


def start_bare_drf(stack: Stack, tag: str) -> tuple[int, int]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.bare_drf.settings",
           "DATABASE_URL": stack.create_database(f"bench_drf_{tag}"), "PYTHONPATH": str(ROOT)}
    python = sys.executable
    run_checked([python, "-m", "django", "migrate", "-v0"], env, "bare DRF migrate")
    port = free_port()
    server = stack.spawn("bare-drf", [str(Path(python).parent / "gunicorn"), "bench.bare_drf.asgi:application", "-k",
                                      "uvicorn_worker.UvicornWorker", "--bind", f"127.0.0.1:{port}", "--workers",
                                      str(SERVER_WORKERS), "--timeout", "60"], env)
    wait_http(stack, "bare-drf", server, port, "/results/", 120)
    return port, server.pid


def bare_drf_op(params: dict) -> Op:
    def op(client: Client, seed: int) -> None:
        client.request("POST", "/results/", {"seed": seed % 2**31, "measurements": MEASUREMENTS, "params": params,
                                             "hardware": HARDWARE, "environment": ENVIRONMENT}, expect=201)
    return op


# --------------------------------------------------------------------------------------------
# The figures
# --------------------------------------------------------------------------------------------


def growth_curve(port: int, headers: dict[str, str], op: Op, writes: int) -> dict[str, Any]:
    """`writes` sequential writes on one finding / experiment; p50 per 100-write window."""
    client = Client(port, headers)
    latencies = []
    try:
        for i in range(writes):
            t0 = time.perf_counter()
            op(client, 10_000_000 + i)
            latencies.append(time.perf_counter() - t0)
    finally:
        client.close()
    windows = growth_windows(writes)
    out = {"writes": writes, "windows": {f"{a}-{b}": window_p50_ms(latencies, a, b) for a, b in windows},
           "latencies_ms": [round(x * 1000, 2) for x in latencies]}
    if windows:
        out["early_p50_ms"] = out["windows"][f"{windows[0][0]}-{windows[0][1]}"]
        out["late_p50_ms"] = out["windows"][f"{windows[-1][0]}-{windows[-1][1]}"]
        out["windows_label"] = f"writes {windows[-1][0]}-{windows[-1][1]} vs {windows[0][0]}-{windows[0][1]}"
    return out


def registry_dispatch(registry: Registry, requests: int) -> dict[str, Any]:
    """Request -> run started (and -> result stored) through the API and a real Celery worker,
    the echo plugin doing nothing: POST a one-seed reproduction, poll the run until it finished,
    then read its started_at / finished_at (server clocks: the same machine)."""
    experiment = registry.new_experiment("perf: dispatch")
    client = Client(registry.port, registry.headers)
    to_started, to_finished, answered_to_started = [], [], []
    try:
        for i in range(requests + 1):  # the first one warms the worker up (imports the plugins)
            t0 = time.time()
            reproduction = client.request("POST", f"/api/v1/experiments/{experiment}/reproductions/",
                                          {"seeds": [i]}, expect=202)
            answered = time.time()
            run_id = reproduction["runs"][0]["id"]
            deadline = time.monotonic() + (180 if i == 0 else 60)
            while True:
                run = client.request("GET", f"/api/v1/runs/{run_id}/", expect=200)
                if run["state"] in ("succeeded", "failed", "cancelled", "timed_out"):
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"run {run_id} still {run['state']} after the deadline")
                time.sleep(0.05)  # the figure is from the server's timestamps: polling less loads it less
            if run["state"] != "succeeded":
                raise BenchError(f"run {run_id} ended {run['state']}")
            if i:
                started_at = datetime.fromisoformat(run["started_at"]).timestamp()
                to_started.append(started_at - t0)
                answered_to_started.append(started_at - answered)  # < 0: started before the 202 arrived
                to_finished.append(datetime.fromisoformat(run["finished_at"]).timestamp() - t0)
    finally:
        client.close()
    return {"to_started": latency_summary(to_started), "to_finished": latency_summary(to_finished),
            "answer_to_started": latency_summary(answered_to_started),
            "method": "POST /api/v1/experiments/{id}/reproductions/ with one seed of the echo plugin, "
                      "sequential; started_at - request time"}


def bare_celery_dispatch(stack: Stack, tag: str, requests: int) -> dict[str, Any]:
    """A bare Celery round trip on the same Redis: apply_async of a task that returns its start
    time, result.get(); one prefork worker process."""
    prefix = f"perfbare{tag}:"
    stack.redis_prefixes.append(prefix)
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    env = {**os.environ, "BARE_CELERY_BROKER": url, "BARE_CELERY_PREFIX": prefix, "PYTHONPATH": str(ROOT)}
    stack.spawn("bare-celery", [sys.executable, "-m", "celery", "-A", "bench.bare_drf.bare_celery", "worker",
                                "--concurrency", "1", "--loglevel", "WARNING", "-n", f"bare-{tag}@%h"], env)
    os.environ.update({"BARE_CELERY_BROKER": url, "BARE_CELERY_PREFIX": prefix})
    sys.path.insert(0, str(ROOT))
    from bench.bare_drf.bare_celery import started

    started.apply_async().get(timeout=120)  # warm-up: waits for the worker to come up
    round_trip, to_started = [], []
    for _ in range(requests):
        t0 = time.time()
        result = started.apply_async()
        began = result.get(timeout=30)
        round_trip.append(time.time() - t0)
        to_started.append(began - t0)
        result.forget()
    stack.stop("bare-celery")
    return {"round_trip": latency_summary(round_trip), "to_started": latency_summary(to_started)}


def external_script(name: str, args: list[str], timeout_s: float, env: dict[str, str],
                    parse: Callable[[str], dict] | None = None) -> dict[str, Any]:
    """Run bench/<name> (another engineer's benchmark) when present: with --json PATH when its
    --help names that option, else its output is kept. Absent: a note, no figures."""
    script = ROOT / "bench" / name
    if not script.exists():
        return {"note": f"skipped: bench/{name} is not in this tree yet", "figures": {}}
    python = sys.executable
    usage = subprocess.run([python, str(script), "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120).stdout
    fd, json_name = tempfile.mkstemp(prefix="perf-", suffix=".json")
    os.close(fd)
    json_path = Path(json_name)
    cmd = [python, str(script)]
    i = 0
    while i < len(args):  # pass an option (with its value, if one follows) only when --help names it
        takes_value = i + 1 < len(args) and not args[i + 1].startswith("--")
        if args[i] in usage:
            cmd += args[i : i + 1 + takes_value]
        i += 1 + takes_value
    if "--json" in usage:
        cmd += ["--json", str(json_path)]
    shown = " ".join(["python", f"bench/{name}", *cmd[2:]]).replace(str(json_path), "PATH")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        output, _ = proc.communicate()
        json_path.unlink(missing_ok=True)
        _drop_databases_named_after(proc.pid)  # the script's own, which its clean-up did not reach
        return {"note": f"bench/{name} ran past {timeout_s:.0f} s and was stopped", "command": shown,
                "output_tail": (output or "")[-3000:], "figures": parse(output or "") if parse else {}}
    except BaseException:
        _kill_group(proc)
        json_path.unlink(missing_ok=True)
        _drop_databases_named_after(proc.pid)
        raise
    figures: dict = {}
    if json_path.exists() and json_path.stat().st_size:
        with contextlib.suppress(ValueError):
            figures = json.loads(json_path.read_text())
    json_path.unlink(missing_ok=True)
    if not figures and parse:
        figures = parse(output or "")
    status = "ok" if proc.returncode == 0 else f"exit status {proc.returncode}"
    return {"note": f"bench/{name}: {status}", "command": shown, "output_tail": (output or "")[-3000:],
            "figures": figures}


def _drop_databases_named_after(pid: int) -> None:
    """Drop the bench_*<pid> databases a killed benchmark script (process pid) left behind."""
    with contextlib.suppress(Exception), _pg() as conn:
        names = [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench%%'")]
        for name in names:
            if name.endswith(f"_{pid}"):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reads_at_scale(stack: Stack, tag: str, settings: Settings, env: dict[str, str]) -> dict[str, Any]:
    """bench/load_scale.py fills a database of this run's own with --findings findings (3 runs and
    20 measurements each), bench/reads_at_scale.py measures the reads on it; the database is dropped
    with the others. reads_at_scale.py writes bench/results/reads_at_scale.json: the file recorded
    there before is put back afterwards (a small run here must not replace the full-scale figures)."""
    for script in ("load_scale.py", "reads_at_scale.py"):
        if not (ROOT / "bench" / script).exists():
            return {"note": f"skipped: bench/{script} is not in this tree yet", "figures": {}}
    database = f"bench_scale_{tag}"
    stack.databases.append(database)  # dropped at the end whatever happens
    n = settings.reads_findings
    loaded = external_script("load_scale.py", ["--database", database, "--findings", str(n), "--runs", str(3 * n),
                                                "--measurements", str(20 * n)], settings.external_timeout_s, env)
    if not loaded["note"].endswith(": ok"):
        return {**loaded, "figures": {}}
    recorded = RESULTS_DIR / "reads_at_scale.json"
    before = recorded.read_bytes() if recorded.exists() else None
    try:
        requests = ["--requests", "20", "--landscape-requests", "5"] if settings.quick else []
        result = external_script("reads_at_scale.py", ["--database", database, "--production", *requests],
                                 settings.external_timeout_s, env)
        measured = result.get("figures") or {}  # its JSON (--json PATH), else what it left in bench/results
        with contextlib.suppress(OSError, ValueError):
            if result["note"].endswith(": ok") and measured.get("database") != database:
                measured = json.loads(recorded.read_text())
        ok = result["note"].endswith(": ok") and measured.get("database") == database  # this run's own figures
        result["figures"] = reads_figures(measured) if ok else {}
    finally:
        written_here = False
        with contextlib.suppress(OSError, ValueError):
            written_here = json.loads(recorded.read_text()).get("database") == database
        if written_here:  # put back what was there (and leave a file someone else wrote since alone)
            if before is None:
                recorded.unlink(missing_ok=True)
            else:
                recorded.write_bytes(before)
    if ok and isinstance(measured.get("findings"), int):  # the rows the figures were measured on
        result["scale"] = ", ".join(f"{measured[key]:,} {key}" for key in ("findings", "runs", "measurements")
                                    if isinstance(measured.get(key), int))
    else:
        result["scale"] = f"{n:,} findings, {3 * n:,} runs, {20 * n:,} measurements asked of bench/load_scale.py"
    result["note"] = (f"{loaded['note']}; {result['note']}; scale: {result['scale']}. reads_at_scale.py measures "
                      "in-process (django.test.Client, registry.settings.production with its Redis cache), "
                      "not through the HTTP server.")
    return result


def machine_description() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem_gb = f"{kb / 1024 / 1024:.0f}"
    pg = "?"
    with contextlib.suppress(Exception), _pg() as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
    redis_version = "?"
    with contextlib.suppress(Exception):
        import redis

        redis_version = redis.Redis(host=REDIS_HOST, port=REDIS_PORT).info("server")["redis_version"]
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem_gb} GB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, PostgreSQL {pg}, Redis {redis_version} (all on one machine, "
            f"shared with other work)")


def git_description() -> str:
    with contextlib.suppress(Exception):
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True).stdout
        return f"{head.strip()}{' with uncommitted changes' if dirty.strip() else ''}"
    return "?"


@dataclass
class Settings:
    quick: bool
    duration_s: float
    reps: int
    growth_writes: int
    dispatch_requests: int
    reads_findings: int
    skip_mlflow: bool
    skip_external: bool
    external_timeout_s: float
    only_ingest: bool = False
    baseline_root: Path | None = None


def attempt(notes: list[str], what: str, fn: Callable[[], Any]) -> Any:
    """fn(), or None with a note naming what failed: one broken figure does not cost the others."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported in the results
        print(f"perf: {what} failed: {exc}", file=sys.stderr, flush=True)
        notes.append(f"FAILED: {what}: {str(exc)[:500]}")
        return None


def collect(settings: Settings, stack: Stack, tag: str, notes: list[str]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    seeds = itertools.count(1)
    print("perf: starting the registry (production settings), its workers and the bare DRF app", flush=True)
    registry = start_registry(stack, tag)
    baseline = None
    if settings.baseline_root:
        print(f"perf: starting the baseline registry of {settings.baseline_root}", flush=True)
        baseline = start_registry(stack, tag, root=settings.baseline_root, label="registry-before")
    drf_port, drf_pid = start_bare_drf(stack, tag)
    mlflow = None
    if not settings.skip_mlflow:
        print("perf: starting MLflow", flush=True)
        mlflow = attempt(notes, "MLflow", lambda: start_mlflow(stack, tag))

    # (name, port, headers, op, results per op)
    ops: list[tuple[str, int, dict[str, str], Op, int]] = []
    for name, server in (("registry", registry), ("registry_before", baseline)):
        if server is None:
            continue
        spread = itertools.cycle(server.spread_experiments)
        ops += [
            (f"{name}_one_finding", server.port, server.headers, server.write_op(server.one_experiment), 1),
            (f"{name}_spread", server.port, server.headers, server.write_op(lambda s=spread: next(s)), 1),
            (f"{name}_batch", server.port, server.headers,
             server.batch_op(server.new_experiment("perf: batch")), BATCH_RUNS),
        ]
    if mlflow:
        ops.append(("mlflow", mlflow.port, {}, mlflow.write_op(mlflow.experiment_id, registry.experiment_params), 1))
    ops.append(("bare_drf", drf_port, {}, bare_drf_op(registry.experiment_params), 1))

    # warm-up, not counted: every server's workers past their first requests (lazy imports, pools)
    for name, port, headers, op, per_op in ops:
        print(f"perf: warm-up {name}", flush=True)
        load(port, headers, op, 8, max(2.0, settings.duration_s / 2), seeds, per_op)
    # repetitions interleaved (rep 1 of every server, then rep 2, ...), so that a burst of other
    # work on the shared machine does not fall on one server only
    ingest: dict[str, Any] = {}
    for concurrency in (1, 8):
        reps: dict[str, list[dict]] = {name: [] for name, *_ in ops}
        for rep in range(settings.reps):
            for name, port, headers, op, per_op in ops:
                print(f"perf: ingest {name} c={concurrency} rep {rep + 1}/{settings.reps}", flush=True)
                reps[name].append(load(port, headers, op, concurrency, settings.duration_s, seeds, per_op))
        for name, runs in reps.items():
            ingest[f"{name}_c{concurrency}"] = aggregate_reps(runs)
    figures["ingest"] = ingest
    for key, result in ingest.items():
        if result["errors"] or result["first_error"]:
            notes.append(f"ingest {key}: {result['errors']} failed results; first error: {result['first_error']}")

    memory = {"registry gunicorn (master + 2 workers)": registry.pid, "bare DRF gunicorn (master + 2 workers)": drf_pid}
    if baseline:
        memory["registry before gunicorn (master + 2 workers)"] = baseline.pid
    if mlflow:
        memory["mlflow server (all processes)"] = mlflow.pid
    for name, proc in stack.procs:
        if name.startswith("celery-"):
            memory[f"registry {name} (parent + pool)"] = proc.pid
    figures["memory"] = {}
    for label, pid in memory.items():
        sizes = session_rss_mb(pid)
        figures["memory"][label] = {"total_mb": sum(sizes), "processes": len(sizes), "each_mb": sizes}
    if settings.only_ingest:
        notes.append("--only-ingest: growth curve, dispatch, worker overhead and reads at scale not run")
        return figures

    print(f"perf: growth curve, {settings.growth_writes} writes on one finding", flush=True)
    figures["growth"] = {}
    growth = attempt(notes, "registry growth curve", lambda: growth_curve(
        registry.port, registry.headers, registry.write_op(registry.new_experiment("perf: growth")),
        settings.growth_writes))
    if growth:
        figures["growth"]["registry"] = growth
    if mlflow:
        print(f"perf: growth curve, {settings.growth_writes} writes on one MLflow experiment", flush=True)
        growth = attempt(notes, "MLflow growth curve", lambda: growth_curve(
            mlflow.port, {}, mlflow.write_op(mlflow.new_experiment("perf-growth"), registry.experiment_params),
            settings.growth_writes))
        if growth:
            figures["growth"]["mlflow"] = growth

    print("perf: dispatch", flush=True)
    figures["dispatch"] = {}
    for name, measure in (("registry", lambda: registry_dispatch(registry, settings.dispatch_requests)),
                          ("bare_celery", lambda: bare_celery_dispatch(stack, tag, settings.dispatch_requests * 2))):
        result = attempt(notes, f"dispatch ({name})", measure)
        if result:
            figures["dispatch"][name] = result

    # the other benchmarks bring up what they need themselves: free the CPUs first
    for name in ("registry", "celery-cpu", "celery-maintenance", "registry-before", "celery-cpu-before",
                 "celery-maintenance-before", "bare-drf", "mlflow"):
        stack.stop(name)
    if settings.skip_external:
        notes.append("worker overhead and reads at scale skipped (--skip-external)")
    else:
        base_env = {**os.environ, "PYTHONPATH": str(ROOT)}
        quick_arg = ["--quick"] if settings.quick else []
        # options are passed only where the script's --help names them
        # the production start mode only (RUN_CHILD_START defaults to zygote): the script's spawn
        # comparison takes seconds a run
        overhead_args = ["--modes", "zygote", "--overhead-runs", "10", "--runs", "100"] if settings.quick else [
            "--modes", "zygote", "--overhead-runs", "20"]
        print("perf: bench/worker_overhead.py", flush=True)
        figures["worker_overhead"] = attempt(notes, "bench/worker_overhead.py", lambda: external_script(
            "worker_overhead.py", [*quick_arg, *overhead_args], settings.external_timeout_s, base_env,
            parse_worker_overhead)) or {"note": "failed to run", "figures": {}}
        print(f"perf: bench/load_scale.py ({settings.reads_findings} findings) + bench/reads_at_scale.py", flush=True)
        figures["reads_at_scale"] = attempt(notes, "reads at scale", lambda: reads_at_scale(
            stack, tag, settings, base_env)) or {"note": "failed to run", "figures": {}}
    return figures


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="short durations (a debugging run, ~6 minutes on 2 busy cores)")
    parser.add_argument("--duration", type=float, help="seconds per repetition (default 5; --quick 2)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, the median is reported (default 3)")
    parser.add_argument("--growth-writes", type=int, help="writes on one finding (default 1000; --quick 200)")
    parser.add_argument("--dispatch-requests", type=int, help="sequential reproductions (default 30; --quick 10)")
    parser.add_argument("--reads-findings", type=int, help="findings for reads_at_scale (default 2000; --quick 500)")
    parser.add_argument("--skip-mlflow", action="store_true", help="no MLflow (its ratios are then N/A)")
    parser.add_argument("--skip-external", action="store_true", help="skip worker_overhead.py and reads_at_scale.py")
    parser.add_argument("--only-ingest", action="store_true",
                        help="the ingest figures (and memory) only: no growth curve, dispatch or external scripts")
    parser.add_argument("--baseline-root", type=Path,
                        help="another checkout of the registry (e.g. `git archive HEAD | tar -x -C DIR`), run beside "
                             "this one with the same load, interleaved: its rows are 'registry before'")
    parser.add_argument("--external-timeout", type=float, default=300,
                        help="seconds each of worker_overhead.py / reads_at_scale.py may run (default 300)")
    parser.add_argument("--benchmarks-md", action=argparse.BooleanOptionalAction, default=None,
                        help="rewrite BENCHMARKS.md (default: on a full run only)")
    parser.add_argument("--note", action="append", default=[], help="a note for the report (repeatable)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR, help="folder for perf.md and perf.json")
    args = parser.parse_args(argv)
    quick = args.quick
    settings = Settings(
        quick=quick,
        duration_s=args.duration or (2.0 if quick else 5.0),
        reps=args.reps,
        growth_writes=args.growth_writes or (200 if quick else 1000),
        dispatch_requests=args.dispatch_requests or (10 if quick else 30),
        reads_findings=args.reads_findings or (500 if quick else 2000),
        skip_mlflow=args.skip_mlflow,
        skip_external=args.skip_external,
        external_timeout_s=args.external_timeout,
        only_ingest=args.only_ingest,
        baseline_root=args.baseline_root.resolve() if args.baseline_root else None,
    )
    write_benchmarks = args.benchmarks_md if args.benchmarks_md is not None else not (quick or args.only_ingest)
    command = shlex.join(["python", "bench/perf.py", *(argv if argv is not None else sys.argv[1:])])

    tag = f"{os.getpid()}"
    stack = Stack(tmp=Path(tempfile.mkdtemp(prefix="bench-perf-")))
    notes = [
        "Registry: production settings and server (gunicorn + registry.asgi_worker.Worker, 2 workers), Celery "
        "workers for the cpu (2 processes) and maintenance (1) queues; the benchmark user's throttle and quota "
        "are raised (API_THROTTLE_USER, QUOTA_RUNS_PER_DAY) so that they do not cut the load.",
        "Registry write: POST /api/v1/experiments/{id}/self-reported-runs/ (token auth, 2 arms x 3 metrics, "
        "params, hardware, environment). 'one finding' = every write to one experiment; 'spread' = round robin "
        "over 8 findings. The ingest targets use 'one finding' (MLflow writes to one experiment).",
        f"MLflow {MLFLOW_REQUIREMENTS[0].split('==')[1]} in bench/.venv-mlflow: `mlflow server` with a "
        "PostgreSQL backend store, --workers 2 (uvicorn; its GenAI job runner off: MLFLOW_SERVER_ENABLE_JOB_EXECUTION="
        "false); one result = runs/create + runs/log-batch (the same 6 metrics, "
        "the params, hardware/environment tags) + runs/update FINISHED.",
        "Bare DRF (bench/bare_drf): one model, a ModelViewSet, no authentication, gunicorn + "
        "uvicorn_worker.UvicornWorker with 2 workers, CONN_MAX_AGE 0 like the registry.",
        "Client: one process, a thread per concurrent client with its own keep-alive HTTP/1.1 connection, on "
        "the same machine as the servers (it competes with them for the CPUs).",
    ]
    notes += args.note
    report: dict[str, Any] = {"mode": "quick" if quick else "full", "settings": settings.__dict__, "notes": notes}
    previous = signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    failed = False
    try:
        report["meta"] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command,
            "machine": machine_description(),
            "git": git_description(),
            "servers": f"{SERVER_WORKERS} worker processes each, PostgreSQL {PG_HOST}:{PG_PORT}, Redis "
                       f"{REDIS_HOST}:{REDIS_PORT}",
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        }
        report["figures"] = collect(settings, stack, tag, notes)
    except KeyboardInterrupt:
        failed = True
        print("perf: interrupted, stopping everything it started", file=sys.stderr)
        return 130
    except BaseException:
        failed = True
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        try:
            stack.close()
            if failed:
                print(f"perf: the servers' logs are kept in {stack.tmp}", file=sys.stderr)
            else:
                shutil.rmtree(stack.tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
    report["meta"]["duration_s"] = round(time.monotonic() - started, 1)
    report["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["targets"] = evaluate_targets(report["figures"])
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "perf.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (args.output / "perf.md").write_text(render_markdown(report))
    if write_benchmarks:
        (ROOT / "BENCHMARKS.md").write_text(render_benchmarks_md(report))
    print(render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
