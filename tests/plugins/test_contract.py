"""The plugin contract, checked against every discovered plugin (built-ins, installed third-party
plugins and test fakes alike): declaration, JSON Schema, presets, and a tiny run that returns every
declared metric for every arm."""

import ast
import importlib
import inspect
import math

import pytest
from interp_registry.sdk import Axis, Experiment, Metric, NotReached, Params, Scale, run_locally
from interp_registry.testing import (
    ContractError,
    assert_contract,
    check_plugin,
    declaration_errors,
    validate_results,
)

from plugins import registry as plugin_registry
from plugins.registry import all_plugins, reset_cache
from registry.reproductions.services import validate_results as server_validate_results
from tests.fakes.plugins import EchoExperiment

BUILTINS = (
    "checkerboard", "sae", "induction", "shortcut", "grokking", "superposition", "topk_sae", "shift", "leace",
    "smeared_keys", "grokfast", "colored_digits",
)
FAULT_INJECTION_FIXTURES = {"crashing", "faulty", "host_bound"}  # fail or misbehave on purpose; tests/worker
reset_cache()
DISCOVERED = sorted(name for name in all_plugins() if name not in FAULT_INJECTION_FIXTURES)


def test_every_builtin_is_discovered_and_available():
    plugins = all_plugins()
    for name in BUILTINS:
        assert plugins[name].available, plugins[name].error


@pytest.mark.parametrize("name", DISCOVERED)
def test_plugin_contract(name):
    """interp_registry.testing's checks (what a plugin author runs in their own suite), and the
    server's own validation of the same tiny run agreeing with them."""
    entry = all_plugins()[name]
    assert entry.available, entry.error
    plugin = entry.experiment
    assert plugin_registry.declaration_errors(plugin) == []
    assert check_plugin(plugin) == []
    for metric in plugin.metrics:
        assert isinstance(metric.axis, Axis)
        assert isinstance(metric.higher_is_better, bool)
    results, ctx = run_locally(plugin, preset="tiny", seed=0)
    rows = server_validate_results(plugin, results)
    assert [tuple(row) for row in rows] == [tuple(row) for row in validate_results(plugin, results)]
    assert len(rows) == len(plugin.arms) * len(plugin.metrics)
    assert ctx.progress_log and ctx.progress_log[-1][0] == pytest.approx(1.0, abs=0.02)


class _Timed(Params):
    steps: int = 3


class TimedEcho(Experiment):
    """A tiny stand-in with one metric of each kind."""

    name = "timed_echo"
    version = "1.0.0"
    Params = _Timed
    metrics = (
        Metric("loss", Axis.CAPABILITY, higher_is_better=False, scale=Scale.RATIO),
        Metric("accuracy", Axis.CAPABILITY, higher_is_better=True, scale=Scale.PROPORTION),
        Metric("steps_to_fit", Axis.DIAGNOSTIC, higher_is_better=False, scale=Scale.RATIO, time_to_event=True),
    )
    presets = {"tiny": {"steps": 1}}

    def run(self, params, ctx):
        ctx.progress(1.0)
        value = {"loss": 0.5, "accuracy": 0.9, "steps_to_fit": NotReached(budget=params.steps)}
        return {"baseline": dict(value), "intervention": dict(value)}


BAD_OUTPUTS = [
    ("not a dict", "must return {arm: {metric: value}}"),
    ({"baseline": {"loss": 1, "accuracy": 0.5, "steps_to_fit": 3}}, "no results for arm 'intervention'"),
    ({"baseline": {"loss": 1, "accuracy": 0.5}, "intervention": {}}, "no value for ['steps_to_fit'] in arm 'baseline'"),
    ({"baseline": {"loss": 1, "accuracy": 0.5, "steps_to_fit": 3, "extra": 1}}, "undeclared metrics"),
    ({"baseline": {"loss": math.nan, "accuracy": 0.5, "steps_to_fit": 3}}, "is not finite: nan"),
    ({"baseline": {"loss": 0.0, "accuracy": 0.5, "steps_to_fit": 3}}, "ratio scale and must be > 0"),
    ({"baseline": {"loss": 1, "accuracy": 1.5, "steps_to_fit": 3}}, "proportion and must be within"),
    ({"baseline": {"loss": NotReached(5), "accuracy": 0.5, "steps_to_fit": 3}}, "not a time-to-event"),
    ({"baseline": {"loss": 1, "accuracy": 0.5, "steps_to_fit": NotReached(math.inf)}}, "budget must be finite"),
    ({"baseline": {"loss": "x", "accuracy": 0.5, "steps_to_fit": 3}}, "is not a number"),
]


@pytest.mark.parametrize(("results", "message"), BAD_OUTPUTS)
def test_local_checks_refuse_what_the_worker_refuses_with_the_same_message(results, message):
    with pytest.raises(ContractError) as local:
        validate_results(TimedEcho, results)
    with pytest.raises(ValueError) as server:
        server_validate_results(TimedEcho, results)
    assert message in str(local.value)
    assert str(local.value) == str(server.value)


def test_run_locally_fails_at_once_on_a_missing_metric_or_a_nan():
    class Forgetful(TimedEcho):
        """Forgets a metric in the intervention arm."""

        def run(self, params, ctx):
            out = super().run(params, ctx)
            del out["intervention"]["accuracy"]
            return out

    class Nan(TimedEcho):
        """Returns NaN."""

        def run(self, params, ctx):
            out = super().run(params, ctx)
            out["baseline"]["loss"] = float("nan")
            return out

    with pytest.raises(ContractError, match=r"no value for \['accuracy'\] in arm 'intervention'"):
        run_locally(Forgetful, preset="tiny")
    with pytest.raises(ContractError, match="metric 'loss' of arm 'baseline' is not finite: nan"):
        run_locally(Nan, preset="tiny")
    results, _ = run_locally(Nan, preset="tiny", validate=False)  # opting out returns it as is
    assert math.isnan(results["baseline"]["loss"])
    with pytest.raises(KeyError, match="no preset 'huge'"):
        run_locally(TimedEcho, preset="huge")


def test_contract_names_every_broken_rule():
    class Undocumented(TimedEcho):
        presets = {"gpu": {"steps": "many"}}

        def run(self, params, ctx):
            return {"baseline": {}, "intervention": {}}

    problems = check_plugin(Undocumented, preset="gpu")
    assert any("has no docstring" in p for p in problems), problems
    assert any("no 'tiny' preset" in p for p in problems), problems
    assert any("preset 'gpu' is not valid Params" in p for p in problems), problems
    assert any("raised" in p for p in problems), problems  # the gpu preset fails Params validation
    with pytest.raises(AssertionError, match="breaks the plugin contract"):
        assert_contract(Undocumented)
    assert_contract(TimedEcho)
    assert check_plugin(EchoExperiment) == []


def test_declaration_checks_agree_with_discovery():
    class ThreeArms(TimedEcho):
        """Three arms."""

        arms = ("baseline", "intervention", "other")

    class TimeOnProportion(TimedEcho):
        """A time to event on the wrong scale."""

        metrics = (Metric("t", Axis.DIAGNOSTIC, higher_is_better=False, scale=Scale.PROPORTION, time_to_event=True),)

    for plugin in (ThreeArms, TimeOnProportion, TimedEcho, int):
        local, server = declaration_errors(plugin), plugin_registry.declaration_errors(plugin)
        assert len(local) == len(server), (local, server)
    assert declaration_errors(int) == ["is not a subclass of interp_registry.sdk.Experiment"]
    assert "arms must be exactly those" in declaration_errors(ThreeArms)[0]


def test_plugins_sdk_is_a_deprecated_alias_of_the_same_objects(monkeypatch):
    """Importing plugins.sdk still works, warns (DeprecationWarning, pointing at the importer), and
    gives the very objects of interp_registry.sdk."""
    import sys

    import interp_registry.sdk

    monkeypatch.delitem(sys.modules, "plugins.sdk", raising=False)  # imported afresh: the warning is at import
    with pytest.warns(DeprecationWarning, match="plugins.sdk is deprecated.*interp_registry.sdk") as caught:
        import plugins.sdk as alias
    assert [w.filename for w in caught if w.category is DeprecationWarning] == [__file__]

    for name in alias.__all__:
        assert getattr(alias, name) is getattr(interp_registry.sdk, name), name
    assert issubclass(EchoExperiment, interp_registry.sdk.Experiment)


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
