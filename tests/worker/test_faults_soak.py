"""The soak of issue 9 at short parameters: bench/soak.py (one implementation, imported from its
path) with its own redis-server as the broker, its own scratch database behind a TCP proxy, two
real workers and a real beat; one worker SIGKILLed, one broker restart, one 5 s database outage.
Every run must succeed exactly once."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, _missing

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.worker]

RUNS = 36


def _harness():
    spec = importlib.util.spec_from_file_location("bench_soak", ROOT / "bench" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_soak", module)
    spec.loader.exec_module(module)
    return module


def test_short_soak_loses_and_duplicates_nothing(tmp_path):
    for program in ("redis-server", "psql"):
        if shutil.which(program) is None:
            _missing(f"{program} (for the soak's own broker and scratch database)")
    if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode != 0:
        _missing("PostgreSQL on 127.0.0.1:5432 (the soak creates its own database there)")
    soak = _harness()
    out = tmp_path / "soak.json"
    status, output, result = soak.run_script(
        ["--runs", str(RUNS), "--baseline-runs", "0", "--workers", "2", "--kill-every", "6", "--max-kills", "1",
         "--broker-restarts", "1", "--db-outages", "1", "--db-outage-s", "5", "--fault-window", "8", "20",
         "--drain-timeout", "150", "--json", str(out)],
        timeout=240,
    )
    print(output[-4000:])
    assert result is not None, output[-4000:]
    arm = result["faults"]
    assert arm["submitted"] == RUNS
    assert arm["lost"] == 0, (arm["lost_ids"], output[-4000:])
    assert arm["duplicated"] == 0, (arm["duplicated_ids"], output[-4000:])
    assert arm["states"] == {"succeeded": RUNS}, (arm["states"], arm["not_succeeded_ids"])
    assert arm["finished"] == RUNS
    assert arm["run_finished_events"] == RUNS
    assert arm["measurements"] == RUNS * soak.MEASUREMENTS_PER_RUN
    injected = {kind: figures["injected"] for kind, figures in arm["recovery"].items()}
    assert injected == {"worker_kill": 1, "broker_restart": 1, "db_outage": 1}, arm["faults"]
    assert result["ok"] and status == 0, output[-4000:]
