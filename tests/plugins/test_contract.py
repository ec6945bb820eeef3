"""The plugin contract, checked against every discovered plugin (built-ins, installed third-party
plugins and test fakes alike): declaration, JSON Schema, presets, and a tiny run that returns every
declared metric for every arm."""

import ast
import importlib
import inspect

import jsonschema
import pytest

from plugins.registry import all_plugins, declaration_errors, reset_cache
from plugins.sdk import Axis, run_locally
from registry.reproductions.services import validate_results

BUILTINS = ("checkerboard", "sae", "induction", "shortcut", "grokking", "superposition")
FAULT_INJECTION_FIXTURES = {"crashing", "faulty", "host_bound"}  # fail or misbehave on purpose; tests/worker
reset_cache()
DISCOVERED = sorted(name for name in all_plugins() if name not in FAULT_INJECTION_FIXTURES)


def test_every_builtin_is_discovered_and_available():
    plugins = all_plugins()
    for name in BUILTINS:
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


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_is_under_the_contract_and_has_its_own_tests(name):
    """Each built-in is checked by ``test_plugin_contract`` above, and has a test module of its own
    that imports the very class registered under its name, runs it (``run_locally``) and asserts on
    what it declares: not just a file that happens to exist."""
    entry = all_plugins()[name]
    assert entry.available, entry.error
    assert name in DISCOVERED  # test_plugin_contract runs on it
    plugin = entry.experiment
    module = importlib.import_module(f"tests.plugins.test_{name}")
    tests = [value for key, value in vars(module).items() if key.startswith("test_") and callable(value)]
    assert len(tests) >= 5, f"tests/plugins/test_{name}.py holds {len(tests)} tests"
    aliases = {key for key, value in vars(module).items() if value is plugin}
    assert aliases, f"tests/plugins/test_{name}.py does not import {plugin.__module__}.{plugin.__qualname__}"
    tree = ast.parse(inspect.getsource(module))
    runs = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "run_locally"
        and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in aliases
    ]
    assert runs, f"tests/plugins/test_{name}.py never runs {plugin.__qualname__} (run_locally)"
    asserts = sum(isinstance(node, ast.Assert) for node in ast.walk(tree))
    assert asserts >= len(tests), f"tests/plugins/test_{name}.py: {asserts} asserts for {len(tests)} tests"
    source = inspect.getsource(module)
    named = {metric.name for metric in plugin.metrics if f'"{metric.name}"' in source or f"'{metric.name}'" in source}
    assert named, f"tests/plugins/test_{name}.py asserts on none of the metrics {plugin.__qualname__} declares"
