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


def test_describe_never_averages_a_time_to_an_event_that_was_not_reached() -> None:
    from interp_registry.sdk import NotReached

    assert plugin_times.describe([1.0, 3.0]) == "2 ± 1.4"
    assert plugin_times.describe([100.0, NotReached(budget=2000), 300.0]) == (
        "200 ± 140 (reached on 2/3; budget 2000)"
    )
    assert plugin_times.describe([NotReached(budget=2000), NotReached(budget=2000)]) == (
        "not reached on 2/2 (budget 2000)"
    )
    assert plugin_times.describe([0.5]) == "0.5"


def test_collect_stores_runs_in_collect_builtins_format(tmp_path) -> None:
    path = tmp_path / "runs.json"
    path.write_text('{"sae": {"version": "0.9.0", "runs": []}}')
    runs = [{"seed": 0, "seconds": 1.0, "arms": {"baseline": {"m": 1.0}, "intervention": {"m": 2.0}}}]
    plugin_times.collect(path, "shift", "1.0.0", runs)
    data = json.loads(path.read_text())
    assert data["shift"] == {"version": "1.0.0", "runs": runs}
    assert data["sae"] == {"version": "0.9.0", "runs": []}  # other plugins' runs kept


def test_setting_key_names_a_setting_by_the_parameters_it_changes() -> None:
    from plugins.registry import all_plugins

    grokfast = all_plugins()["grokfast"].experiment
    assert plugin_times.setting_key("grokfast", grokfast, None) == "grokfast"
    assert plugin_times.setting_key("grokfast", grokfast, {"intervention_arm": "grokfast"}) == "grokfast"
    every_default = grokfast.Params().model_dump(mode="json")  # as an experiment stores its parameters
    assert plugin_times.setting_key("grokfast", grokfast, every_default) == "grokfast"
    changed = {**every_default, "intervention_arm": "fourier_init"}
    assert plugin_times.setting_key("grokfast", grokfast, changed) == 'grokfast {"intervention_arm": "fourier_init"}'


def test_the_stored_runs_cover_every_example_finding_at_its_plugin_version_and_seeds() -> None:
    """bench/results/builtins_default.json (what the README's and RESULTS.md's figures come from)
    holds runs of the installed version of every example's settings (its experiment and the labelled
    second ones), as many seeds as each runs:
    bumping a plugin's version without re-collecting its runs fails here."""
    from plugins.registry import all_plugins
    from registry.findings.examples import example_specs

    data = json.loads((ROOT / "bench" / "results" / "builtins_default.json").read_text())
    plugins = all_plugins()
    for spec in example_specs():
        experiment = plugins[spec["plugin"]].experiment
        seeds = spec.get("seeds", 3)
        settings = [(spec.get("params"), seeds)] + [
            (extra.get("params"), extra.get("seeds", seeds)) for extra in spec.get("more_experiments", [])
        ]
        for params, wanted in settings:
            key = plugin_times.setting_key(spec["plugin"], experiment, params)
            assert key in data, key
            assert data[key]["version"] == experiment.version, (key, data[key]["version"], experiment.version)
            stored = sorted(run["seed"] for run in data[key]["runs"])
            assert stored[:wanted] == list(range(wanted)), key
