"""The plugin's own tests: the registry's contract (interp_registry.testing), then what it measures.
Run with `pip install -e .[test] && pytest`."""

from interp_registry.sdk import run_locally
from interp_registry.testing import assert_contract, check_plugin
from registry_plugin_template import ProbeDecayExperiment


def test_the_plugin_meets_the_registry_contract():
    # declaration, docstring, presets (a 'tiny' one), and a tiny run checked as a worker checks it
    assert_contract(ProbeDecayExperiment)
    assert check_plugin(ProbeDecayExperiment) == []


def test_weight_decay_lowers_reliance_on_the_spurious_feature():
    results, ctx = run_locally(ProbeDecayExperiment, preset="tiny", seed=0)  # validated (validate=True)
    assert results["intervention"]["spurious_reliance"] < results["baseline"]["spurious_reliance"]
    assert "results.json" in ctx.artifacts
    curves = {(curve["arm"], curve["name"]): curve for curve in ctx.series}  # ctx.log_series, per arm
    assert set(curves) == {("baseline", "train_loss"), ("intervention", "train_loss")}
    assert curves[("baseline", "train_loss")]["steps"][-1] == ProbeDecayExperiment.presets["tiny"]["steps"]
