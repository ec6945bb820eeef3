"""bench/plugin_times.py and bench/collect_builtins.py cover every built-in plugin (no training here)."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

from interp_registry.sdk import NotReached

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import collect_builtins, plugin_times  # noqa: E402


def _builtin_entry_points() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    entry_points = project["entry-points"]["interp_registry.experiments"]
    return {name for name, target in entry_points.items() if target.startswith("plugins.")}


def test_the_bench_scripts_list_every_builtin_plugin_once():
    assert set(plugin_times.BUILTINS) == _builtin_entry_points()
    assert len(plugin_times.BUILTINS) == len(set(plugin_times.BUILTINS))
    assert collect_builtins.BUILTINS is plugin_times.BUILTINS  # one list, not a restated copy


def test_plain_results_are_json_with_censored_times():
    results = {"baseline": {"steps": NotReached(budget=2000), "accuracy": 0.5}, "intervention": {"steps": 960}}
    plain = plugin_times.plain(results)
    assert plain == {
        "baseline": {"steps": {"censored": True, "value": 2000.0}, "accuracy": 0.5},
        "intervention": {"steps": 960.0},
    }
    assert json.loads(json.dumps(plain)) == plain
