"""The plugin contract, checked against every discovered plugin (built-ins, installed third-party
plugins and test fakes alike): declaration, JSON Schema, presets, and a tiny run that returns every
declared metric for every arm."""

import jsonschema
import pytest

from plugins.registry import all_plugins, declaration_errors, reset_cache
from plugins.sdk import Axis, run_locally
from registry.reproductions.services import validate_results
from tests.conftest import ROOT

FAULT_INJECTION_FIXTURES = {"crashing"}  # fails on purpose; tests/worker covers it
reset_cache()
DISCOVERED = sorted(name for name in all_plugins() if name not in FAULT_INJECTION_FIXTURES)


def test_every_builtin_is_discovered_and_available():
    plugins = all_plugins()
    for name in ("checkerboard", "sae", "induction", "shortcut", "grokking", "superposition"):
        assert plugins[name].available, plugins[name].error


@pytest.mark.parametrize("name", DISCOVERED)
def test_plugin_contract(name):
    entry = all_plugins()[name]
    assert entry.available, entry.error
    plugin = entry.experiment
    assert declaration_errors(plugin) == []
    assert plugin.__doc__ and plugin.__doc__.strip(), "a plugin documents what it reproduces"
    for metric in plugin.metrics:
        assert isinstance(metric.axis, Axis)
        assert isinstance(metric.higher_is_better, bool)
    schema = plugin.params_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    defaults = plugin.Params().model_dump(mode="json")
    jsonschema.validate(defaults, schema)
    assert "tiny" in plugin.presets, "every plugin offers a 'tiny' preset for tests"
    for preset in plugin.presets.values():
        plugin.Params.model_validate(preset)
    results, ctx = run_locally(plugin, preset="tiny", seed=0)
    rows = validate_results(plugin, results)
    assert len(rows) == len(plugin.arms) * len(plugin.metrics)
    assert ctx.progress_log and ctx.progress_log[-1][0] == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("name", ["checkerboard", "sae", "induction", "shortcut", "grokking", "superposition"])
def test_every_builtin_has_its_own_tests(name):
    assert (ROOT / "tests" / "plugins" / f"test_{name}.py").exists()
