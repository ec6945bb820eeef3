"""The pure helpers of bench/perf.py (the one benchmark command): no servers started here."""

from __future__ import annotations

import importlib.util
import json
import math
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_perf():
    spec = importlib.util.spec_from_file_location("bench_perf", ROOT / "bench" / "perf.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_perf"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


perf = _load_perf()


def test_percentile_interpolates_like_numpy():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert perf.percentile(values, 50) == 3.0
    assert perf.percentile(values, 0) == 1.0 and perf.percentile(values, 100) == 5.0
    assert perf.percentile(values, 95) == pytest.approx(4.8)  # numpy.percentile([1..5], 95)
    assert perf.percentile([1.0, 2.0], 50) == pytest.approx(1.5)
    assert perf.percentile([7.0], 95) == 7.0
    assert math.isnan(perf.percentile([], 50))
    with pytest.raises(ValueError):
        perf.percentile(values, 101)


def test_latency_summary_is_in_milliseconds():
    summary = perf.latency_summary([0.010, 0.020, 0.030])
    assert summary["n"] == 3
    assert summary["p50_ms"] == pytest.approx(20.0)
    assert summary["p95_ms"] == pytest.approx(29.0)
    assert summary["max_ms"] == pytest.approx(30.0)
    assert math.isnan(perf.latency_summary([])["p50_ms"])


def test_median_of_repetitions_skips_missing_values():
    reps = [{"x": 3.0}, {"x": 1.0}, {"x": math.nan}, {"x": 2.0}, {}]
    assert perf.median_of(reps, "x") == 2.0
    assert math.isnan(perf.median_of([{"x": math.nan}], "x"))


def test_ratio_is_none_without_a_usable_denominator():
    assert perf.ratio(10.0, 4.0) == 2.5
    assert perf.ratio(10.0, 0.0) is None
    assert perf.ratio(None, 4.0) is None and perf.ratio(1.0, None) is None
    assert perf.ratio(math.nan, 4.0) is None


def test_growth_windows_and_their_p50():
    assert perf.growth_windows(1000) == [(1, 100), (401, 500), (901, 1000)]
    assert perf.growth_windows(200) == [(1, 100), (101, 200)]
    assert perf.growth_windows(50) == [(1, 50)]
    assert perf.growth_windows(0) == []
    latencies = [0.010] * 100 + [0.030] * 100
    assert perf.window_p50_ms(latencies, 1, 100) == pytest.approx(10.0)
    assert perf.window_p50_ms(latencies, 101, 200) == pytest.approx(30.0)
    assert math.isnan(perf.window_p50_ms(latencies, 151, 250))  # not enough writes


def test_target_statuses():
    assert perf.target("a", 6.0, ">=", 5.0)["status"] == "PASS"
    assert perf.target("a", 5.0, ">=", 5.0)["status"] == "PASS"
    assert perf.target("a", 4.9, ">=", 5.0)["status"] == "MISS"
    assert perf.target("b", 1.2, "<=", 1.2)["status"] == "PASS"
    assert perf.target("b", 1.3, "<=", 1.2)["status"] == "MISS"
    assert perf.target("c", 50.0, "<", 50.0)["status"] == "MISS"
    assert perf.target("d", None, ">=", 1.0)["status"] == "N/A"
    assert perf.target("d", math.nan, ">=", 1.0)["status"] == "N/A"
    with pytest.raises(ValueError):
        perf.target("e", 1.0, "==", 1.0)


def _figures(registry_rps: float, mlflow_rps: float, drf_rps: float) -> dict:
    ingest = {}
    for c in (1, 8):
        ingest[f"registry_one_finding_c{c}"] = {"results_per_s": registry_rps, "p50_ms": 10.0, "p95_ms": 20.0}
        ingest[f"mlflow_c{c}"] = {"results_per_s": mlflow_rps, "p50_ms": 30.0, "p95_ms": 50.0}
        ingest[f"bare_drf_c{c}"] = {"results_per_s": drf_rps, "p50_ms": 5.0, "p95_ms": 8.0}
    return {
        "ingest": ingest,
        "growth": {"registry": {"early_p50_ms": 50.0, "late_p50_ms": 55.0,
                                "windows_label": "writes 901-1000 vs 1-100"}},
        "dispatch": {"registry": {"to_started": {"p50_ms": 12.0}}, "bare_celery": {"round_trip": {"p50_ms": 2.0}}},
        "worker_overhead": {"figures": {"result": {"overhead_p50_ms": 40.0, "throughput_fraction": 0.7}}},
        "reads_at_scale": {"figures": {}},
    }


def test_evaluate_targets_computes_the_ratios_of_one_run():
    rows = {r["target"]: r for r in perf.evaluate_targets(_figures(registry_rps=100.0, mlflow_rps=10.0, drf_rps=200.0))}
    mlflow_c1 = rows["ingest c=1: registry / MLflow results/s"]
    assert (mlflow_c1["value"], mlflow_c1["status"]) == (10.0, "PASS")
    drf_c8 = rows["ingest c=8: registry / bare DRF POST results/s"]
    assert (drf_c8["value"], drf_c8["status"]) == (0.5, "MISS")
    growth = rows["p50 per write, last 100 / first 100 writes on one finding"]
    assert growth["value"] == pytest.approx(1.1) and growth["status"] == "PASS"
    dispatch = rows["request -> run started p50, minus bare Celery round trip p50"]
    assert (dispatch["value"], dispatch["status"]) == (10.0, "PASS")
    # figures found at any depth of the other scripts' JSON
    assert rows[OVERHEAD]["status"] == "PASS"
    assert rows[THROUGHPUT]["status"] == "MISS"
    assert rows["finding detail p95"]["status"] == "N/A"


def test_evaluate_targets_without_mlflow_is_not_applicable():
    figures = _figures(registry_rps=100.0, mlflow_rps=10.0, drf_rps=100.0)
    figures["ingest"] = {k: v for k, v in figures["ingest"].items() if not k.startswith("mlflow")}
    rows = {r["target"]: r for r in perf.evaluate_targets(figures)}
    assert rows["ingest c=1: registry / MLflow results/s"]["status"] == "N/A"
    assert rows["ingest c=1: registry / bare DRF POST results/s"]["status"] == "PASS"
    assert all(r["status"] == "N/A" for r in perf.evaluate_targets({}))


def test_markdown_table_escapes_pipes():
    table = perf.markdown_table(["a", "b"], [[1, "x|y"], ["-", 2.5]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |", "| - | 2.5 |"]


def test_fmt():
    assert perf.fmt(1234.567) == "1,234.6"
    assert perf.fmt(0.4567, 2) == "0.46"
    assert perf.fmt(None) == "-" and perf.fmt(math.nan) == "-"
    assert perf.fmt("text") == "text"


def test_render_markdown_and_benchmarks_md():
    figures = _figures(registry_rps=100.0, mlflow_rps=10.0, drf_rps=200.0)
    figures["growth"]["registry"]["windows"] = {"1-100": 50.0, "901-1000": 55.0}
    figures["growth"]["mlflow"] = {"windows": {"1-100": 120.0, "901-1000": 118.0}}
    figures["memory"] = {"registry gunicorn": {"total_mb": 300.0, "processes": 3, "each_mb": [150.0, 100.0, 50.0]}}
    figures["dispatch"]["registry"]["to_finished"] = {"p50_ms": 30.0, "p95_ms": 40.0, "n": 30}
    report = {
        "mode": "full",
        "meta": {"date": "2026-12-02 15:10 UTC", "command": "python bench/perf.py", "machine": "2 CPUs",
                 "git": "abc123"},
        "figures": figures,
        "targets": perf.evaluate_targets(figures),
        "notes": ["a note"],
    }
    text = perf.render_markdown(report)
    assert "| registry, one finding | 1 | 100.0 | 100.0 | 10.0 | 20.0 |" in text
    assert "| MLflow, one experiment | 8 | 10.0 | 30.0 | 30.0 | 50.0 |" in text  # 3 requests a result
    assert "| registry | 50.0 | 55.0 |" in text and "writes 901-1000 (ms)" in text
    assert "| ingest c=1: registry / MLflow results/s | 10.00 x | >= 5.00 x | PASS |  |" in text
    assert "| ingest c=8: registry / bare DRF POST results/s | 0.50 x | >= 0.80 x | MISS |  |" in text
    assert "| finding detail p95 | - | < 50 ms | N/A | not run |" in text
    assert "| registry gunicorn | 300 | 3 | 150, 100, 50 |" in text
    assert "- a note" in text
    benchmarks = perf.render_benchmarks_md(report)
    assert benchmarks.startswith("# Benchmarks\n")
    assert "**date**: 2026-12-02 15:10 UTC" in benchmarks and "`python bench/perf.py`" in benchmarks
    assert "**machine**: 2 CPUs" in benchmarks and "## Targets (issue 11)" in benchmarks
    assert "- date:" not in benchmarks  # the run's facts once, in the header
    assert benchmarks.index("## Targets") < benchmarks.index("## Recording one result")
    json.dumps(report)  # what perf.json holds is plain JSON


def test_free_port_is_bindable():
    port = perf.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


OVERHEAD = "worker overhead per run (p50, task start -> result committed minus the plugin)"
THROUGHPUT = "small-run throughput / ideal (2 processes, 50 ms plugin)"
WORKER_OVERHEAD_OUTPUT = """\
(a) zygote 30 sequential runs of a 0.5 s plugin, 1 pool process:
    task start -> result committed, minus plugin time: p50    31.5 ms  p95    48.0 ms  max    60.2 ms
    request -> finished_at (through Celery), minus plugin time: p50    52.5 ms  p95    80.0 ms  max    99.0 ms
    child start (until its first message):             p50     8.0 ms  p95    10.0 ms  max    12.0 ms
(a) spawn  30 sequential runs of a 0.5 s plugin, 1 pool process:
    task start -> result committed, minus plugin time: p50  1,210.0 ms  p95  1,400.0 ms  max 1,500.0 ms
(c) zygote 5 runs of a 0.5 s plugin calling ctx.progress every ~1 ms step:
    task start -> result committed, minus plugin time: p50    90.0 ms  p95    95.0 ms  max    99.0 ms
(b) zygote 200 runs of a 50 ms plugin, 2 pool processes:
    34.0 runs/s first claim -> last finished (85 % of the ideal 40/s); 30.1 runs/s from the first request
"""


def test_parse_worker_overhead_reads_its_text_output():
    figures = perf.parse_worker_overhead(WORKER_OVERHEAD_OUTPUT)
    assert figures["overhead"]["zygote"] == {"task_p50_ms": 31.5, "task_p95_ms": 48.0, "full_p50_ms": 52.5,
                                             "full_p95_ms": 80.0}
    assert figures["overhead"]["spawn"]["task_p50_ms"] == 1210.0
    assert figures["overhead_p50_ms"] == 31.5  # the first mode; (c)'s progress runs are not overhead
    assert figures["throughput"]["zygote"]["runs_per_s"] == 34.0
    assert figures["throughput_fraction"] == pytest.approx(0.85)
    rows = {r["target"]: r for r in perf.evaluate_targets({"worker_overhead": {"figures": figures}})}
    assert rows[OVERHEAD]["status"] == "PASS"
    assert rows[THROUGHPUT]["status"] == "PASS"
    assert perf.parse_worker_overhead("Traceback (most recent call last):\nRuntimeError: boom\n") == {}


def test_reads_figures_from_reads_at_scale_json():
    result = {
        "findings": 2000, "findings_with_effects": 200,
        "reads": [
            {"read": "findings list, kind filter + q (1 word)", "p50_ms": 9.0, "p95_ms": 20.0},
            {"read": "findings list, status filter + q (2 words)", "p50_ms": 12.0, "p95_ms": 31.0},
            {"read": "findings list, no filter (page 1)", "p50_ms": 5.0, "p95_ms": 90.0},
            {"read": "finding detail", "p50_ms": 4.0, "p95_ms": 7.0},
            {"read": "finding effects", "p50_ms": 6.0, "p95_ms": 60.0},
            {"read": "landscape (all findings)", "p50_ms": 100.0, "p95_ms": 150.0},
        ],
    }
    figures = perf.reads_figures(result)
    assert figures["list_search_p95_ms"] == 31.0  # the slowest search; the unfiltered page is not a search
    assert (figures["detail_p95_ms"], figures["effects_p95_ms"], figures["landscape_p95_ms"]) == (7.0, 60.0, 150.0)
    rows = {r["target"]: r for r in perf.evaluate_targets(
        {"reads_at_scale": {"figures": figures, "scale": "2,000 findings"}})}
    assert rows["findings list with a filter and q, p95"]["status"] == "PASS"
    assert rows["finding effects p95"]["status"] == "MISS"
    assert rows["landscape (all findings) p95"]["status"] == "PASS"  # < 200 ms
    assert rows["finding detail p95"]["note"] == "2,000 findings"
    assert perf.reads_figures({}) == {"findings": None, "findings_with_effects": None, "reads": []}


def test_attempt_keeps_going_with_a_note():
    notes: list[str] = []
    assert perf.attempt(notes, "fine", lambda: 3) == 3
    assert perf.attempt(notes, "broken", lambda: 1 / 0) is None
    assert notes == ["FAILED: broken: division by zero"]


def test_stack_stops_the_process_group_it_started(tmp_path):
    import os
    import time

    stack = perf.Stack(tmp=tmp_path)
    # a leader with a child of its own, as gunicorn and celery have
    proc = stack.spawn("sleeper", ["sh", "-c", "sleep 60 & sleep 60; wait"], dict(os.environ))
    time.sleep(0.3)
    assert len(perf.session_rss_mb(proc.pid)) >= 2  # the shell and its sleeps, in their own session
    stack.close()
    assert proc.poll() is not None
    assert perf.session_rss_mb(proc.pid) == []
    assert stack.procs == []
