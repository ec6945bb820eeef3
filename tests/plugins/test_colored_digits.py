"""The colored_digits plugin: the shortcut plugin's ERM/IRMv1 on scikit-learn's real 8x8 digits;
IRM beats ERM where the colour flips, and without scikit-learn the plugin is listed unavailable."""

import math
import sys

import pytest
import torch
from interp_registry.sdk import BASELINE, INTERVENTION, Scale, run_locally
from interp_registry.testing import assert_contract
from pydantic import ValidationError

from plugins import registry as plugin_registry
from plugins.colored_digits import EXAMPLE_FINDING, ColoredDigitsExperiment
from plugins.colored_digits.experiment import ColoredDigitsParams, digit_images, digits_sampler
from plugins.registry import all_plugins
from plugins.shortcut import ShortcutExperiment

METRICS = {metric.name for metric in ColoredDigitsExperiment.metrics}


@pytest.fixture(scope="module")
def tiny_runs():
    """The tiny preset, seeds 0-2: {seed: (results, ctx)}."""
    torch.set_num_threads(1)
    return {seed: run_locally(ColoredDigitsExperiment, preset="tiny", seed=seed) for seed in range(3)}


def test_contract_and_registration():
    assert_contract(ColoredDigitsExperiment)  # declaration, docstring, presets and a tiny run, as a worker checks
    entry = all_plugins()["colored_digits"]  # registered through the pyproject entry point, like the built-ins
    assert entry.available and entry.experiment is ColoredDigitsExperiment
    # the shortcut plugin's metrics: same names, axes, scales (proportions, none censored) and descriptions
    assert ColoredDigitsExperiment.metrics == ShortcutExperiment.metrics
    assert METRICS == {"test_accuracy", "worst_group_accuracy", "train_accuracy"}
    assert all(m.scale is Scale.PROPORTION and not m.time_to_event for m in ColoredDigitsExperiment.metrics)
    assert {"tiny", "gpu"} <= set(ColoredDigitsExperiment.presets)
    for preset in ColoredDigitsExperiment.presets.values():
        ColoredDigitsParams.model_validate(preset)
    import plugins.colored_digits.experiment as module

    assert "arXiv:1907.02893" in module.__doc__ and "load_digits" in module.__doc__


@pytest.mark.parametrize("seed", range(3))
def test_irm_beats_erm_where_the_colour_flips(tiny_runs, seed):
    """The paper's direction: ERM follows the colour (near its 85% training rate, ~10% when it flips);
    IRMv1 gives up training accuracy for accuracy in the shifted test environment."""
    results, _ = tiny_runs[seed]
    erm, irm = results[BASELINE], results[INTERVENTION]
    assert erm["train_accuracy"] > 0.8 and erm["test_accuracy"] < 0.2
    assert irm["test_accuracy"] > erm["test_accuracy"] + 0.3
    assert irm["worst_group_accuracy"] > erm["worst_group_accuracy"] + 0.1
    assert irm["train_accuracy"] < erm["train_accuracy"] - 0.05  # the price: the colour's share


def test_values_series_and_progress(tiny_runs):
    for results, ctx in tiny_runs.values():
        assert set(results) == {BASELINE, INTERVENTION}
        for values in results.values():
            assert set(values) == METRICS
            assert all(type(v) is float and math.isfinite(v) and 0.0 <= v <= 1.0 for v in values.values())
            assert values["worst_group_accuracy"] <= values["test_accuracy"] + 1e-9
        series = {(s["arm"], s["name"]): s for s in ctx.series}
        curves = ("nll", "penalty", "train_accuracy", "test_accuracy")
        assert set(series) == {(arm, name) for arm in (BASELINE, INTERVENTION) for name in curves}
        assert series[(BASELINE, "penalty")]["values"] == [0.0] * len(series[(BASELINE, "penalty")]["values"])
        assert ctx.progress_log[-1][0] == pytest.approx(1.0)
        assert "training_curves.json" in ctx.artifacts


def test_same_seed_gives_the_same_results(tiny_runs):
    again, _ = run_locally(ColoredDigitsExperiment, preset="tiny", seed=0)
    assert again == tiny_runs[0][0]


def test_the_environments_follow_the_colored_mnist_protocol():
    """Test images are held out from both training environments, which hold disjoint images; labels
    flip 25% of the time; the colour agrees with the label 90% / 80% in training and 10% at test."""
    params = ColoredDigitsParams()
    shapes, sample = digits_sampler(params, torch.Generator().manual_seed(0), device=torch.device("cpu"))
    assert shapes.shape == (1797, 64) and 0.0 <= shapes.min() and shapes.max() <= 1.0
    rows = {tuple(row.tolist()): i for i, row in enumerate(shapes)}
    seen = []
    for environment, agreement in ((0, 0.9), (1, 0.8), (None, 0.1)):
        images, labels, colours = sample(40_000, environment)
        assert images.shape == (40_000, 128)
        # the digit sits in channel `colour`, the other channel blank
        blank = torch.where(colours[:, None] == 1, images[:, :64], images[:, 64:])
        assert blank.abs().max() == 0
        assert (colours == labels).float().mean() == pytest.approx(agreement, abs=0.01)
        digits = torch.where(colours[:, None] == 1, images[:, 64:], images[:, :64])
        seen.append({rows[tuple(row.tolist())] for row in digits.unique(dim=0)})
    train_0, train_1, test = seen
    assert not (train_0 & train_1) and not ((train_0 | train_1) & test)
    assert len(test) == pytest.approx(0.3 * 1797, abs=2)  # every held-out image drawn at least once


def test_label_noise_is_a_quarter():
    from plugins.colored_digits.experiment import colour

    digits = torch.arange(10).repeat(10_000)
    _, labels, _ = colour(torch.zeros(len(digits), 4), digits, 0.25, 0.5, torch.Generator().manual_seed(1))
    assert (labels != (digits < 5).float()).float().mean() == pytest.approx(0.25, abs=0.01)


def test_upscaling_to_the_papers_14x14():
    shapes, digits = digit_images(196, torch.device("cpu"))
    assert shapes.shape == (1797, 196) and digits.shape == (1797,)
    assert 0.0 <= shapes.min() and shapes.max() <= 1.0
    results, _ = run_locally(ColoredDigitsExperiment, {"n_pixels": 196, "steps": 3, "eval_samples": 200}, seed=0)
    assert set(results[INTERVENTION]) == METRICS


@pytest.mark.parametrize(
    "bad", [{"n_pixels": 100 + 1}, {"n_pixels": 49}, {"test_fraction": 0.0}, {"test_fraction": 0.999},
            {"train_colour_noise": (0.1, 1.5)}],
)
def test_params_validation_rejects(bad):
    with pytest.raises(ValidationError):
        ColoredDigitsParams.model_validate(bad)


def test_without_scikit_learn_the_plugin_is_unavailable_with_the_reason(monkeypatch):
    """The registry lists it, unavailable, saying what to install; nothing else breaks."""
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith(("sklearn.", "plugins.colored_digits"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    entry_point = plugin_registry._ExtraEntryPoint("colored_digits", "plugins.colored_digits:ColoredDigitsExperiment")
    entry = plugin_registry._load([entry_point], None)["colored_digits"]
    assert not entry.available
    assert "scikit-learn" in entry.error and "real-data" in entry.error


def test_example_finding_is_valid_and_claims_follow_the_scale_rules():
    assert EXAMPLE_FINDING["kind"] == "fix" and EXAMPLE_FINDING["seeds"] >= 3
    ColoredDigitsParams.model_validate(EXAMPLE_FINDING["params"])
    assert {c["metric"] for c in EXAMPLE_FINDING["claims"]} <= METRICS
    for claim in EXAMPLE_FINDING["claims"]:
        assert ColoredDigitsExperiment.metric(claim["metric"]).scale is Scale.PROPORTION
        assert claim["threshold_unit"] == "absolute" and 0 < claim["min_relative_effect"] < 1
        assert f"{round(claim['min_relative_effect'] * 100)} points" in claim["statement"]


@pytest.mark.django_db
def test_the_example_loader_creates_the_finding():
    from registry.findings.examples import examples_load
    from registry.findings.models import Finding

    examples_load(reproduce=False, preset="tiny")
    finding = Finding.objects.get(title=EXAMPLE_FINDING["title"])
    (experiment,) = finding.experiments.all()
    assert experiment.plugin == "colored_digits"
    assert experiment.params["steps"] == ColoredDigitsExperiment.presets["tiny"]["steps"]
    assert sorted(c.metric for c in finding.claims.all()) == sorted(c["metric"] for c in EXAMPLE_FINDING["claims"])
