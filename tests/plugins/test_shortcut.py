"""The shortcut plugin: IRM resists a spurious colour that ERM learns (synthetic Colored-MNIST)."""

import json
import math

import pytest
import torch
from interp_registry.sdk import BASELINE, INTERVENTION, Axis, LocalContext, StopRequested, run_locally
from pydantic import ValidationError

from plugins.registry import declaration_errors
from plugins.shortcut import EXAMPLE_FINDING, ShortcutExperiment
from plugins.shortcut.experiment import ShortcutParams, irm_penalty, make_environment

METRICS = {metric.name for metric in ShortcutExperiment.metrics}


@pytest.fixture(scope="module")
def tiny_runs():
    runs = {seed: run_locally(ShortcutExperiment, preset="tiny", seed=seed) for seed in range(3)}
    return runs


def test_declaration():
    assert declaration_errors(ShortcutExperiment) == []
    assert ShortcutExperiment.name == "shortcut"
    assert ShortcutExperiment.version == "1.0.0"
    assert ShortcutExperiment.arms == (BASELINE, INTERVENTION)
    assert METRICS == {"test_accuracy", "worst_group_accuracy", "train_accuracy"}
    axes = {metric.name: metric.axis for metric in ShortcutExperiment.metrics}
    assert axes == {
        "test_accuracy": Axis.SAFETY,
        "worst_group_accuracy": Axis.SAFETY,
        "train_accuracy": Axis.CAPABILITY,
    }
    assert all(metric.higher_is_better for metric in ShortcutExperiment.metrics)
    assert {"tiny", "gpu"} <= set(ShortcutExperiment.presets)
    for preset in ShortcutExperiment.presets.values():
        ShortcutParams.model_validate(preset)


@pytest.mark.parametrize("seed", range(3))
def test_irm_resists_the_shortcut(tiny_runs, seed):
    results, _ = tiny_runs[seed]
    erm, irm = results[BASELINE], results[INTERVENTION]
    assert irm["test_accuracy"] > erm["test_accuracy"] + 0.2
    assert irm["worst_group_accuracy"] > erm["worst_group_accuracy"]
    # ERM follows the colour: near its 85% training rate and far below chance when it flips.
    assert erm["train_accuracy"] > 0.8 and erm["test_accuracy"] < 0.3


@pytest.mark.parametrize("seed", range(3))
def test_every_metric_of_every_arm_is_a_finite_float(tiny_runs, seed):
    results, ctx = tiny_runs[seed]
    assert set(results) == {BASELINE, INTERVENTION}
    for arm in results.values():
        assert set(arm) == METRICS
        assert all(type(value) is float and math.isfinite(value) for value in arm.values())
        assert all(0.0 <= value <= 1.0 for value in arm.values())
        assert arm["worst_group_accuracy"] <= arm["test_accuracy"] + 1e-9
    fractions = [fraction for fraction, _ in ctx.progress_log]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] == pytest.approx(1.0)
    assert ctx.logs
    curves = json.loads(ctx.artifacts["training_curves.json"])
    assert set(curves) == {BASELINE, INTERVENTION} and curves[BASELINE]


def test_same_seed_gives_the_same_results(tiny_runs):
    again, _ = run_locally(ShortcutExperiment, preset="tiny", seed=0)
    assert again == tiny_runs[0][0]


def test_environments_have_the_documented_correlations():
    params = ShortcutParams()
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.rand(10, params.n_pixels, generator=generator)
    for colour_noise in (0.1, 0.2, 0.9):
        images, labels, colours = make_environment(params, prototypes, 40_000, colour_noise, generator)
        assert images.shape == (40_000, 2 * params.n_pixels)
        assert (colours != labels).float().mean().item() == pytest.approx(colour_noise, abs=0.01)
        # The digit sits in the channel named by the colour; the other channel is blank.
        red, green = images[:, : params.n_pixels], images[:, params.n_pixels :]
        assert torch.all(red[colours == 1] == 0) and torch.all(green[colours == 0] == 0)
        assert images.min() >= 0.0 and images.max() <= 1.0
    # The shape predicts the label 75% of the time: recover the digit from its nearest prototype.
    images, labels, colours = make_environment(params, prototypes, 40_000, 0.5, generator)
    shapes = images[:, : params.n_pixels] + images[:, params.n_pixels :]
    digits = torch.cdist(shapes, prototypes).argmin(dim=1)
    agreement = ((digits < 5).float() == labels).float().mean().item()
    assert agreement == pytest.approx(1 - params.label_noise, abs=0.01)


def test_irm_penalty_vanishes_only_at_the_optimal_scale():
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    logits = torch.tensor([2.0, -2.0, 2.0, -2.0])
    # Confident and always right: scaling the logits up would still lower the risk.
    assert irm_penalty(logits, labels).item() > 0
    # Calibrated: p = 0.75 where the label is 1 three times out of four.
    labels = torch.tensor([1.0, 1.0, 1.0, 0.0])
    calibrated = torch.full((4,), math.log(3.0))
    assert irm_penalty(calibrated, labels).item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize(
    "bad",
    [
        {"n_pixels": 0},
        {"label_noise": 0.6},
        {"train_colour_noise": (0.1, 1.5)},
        {"test_colour_noise": -0.1},
        {"steps": 0},
        {"lr": 0.0},
        {"penalty_weight": -1.0},
        {"steps": "many"},
        {"unknown_parameter": 1},
    ],
)
def test_params_reject_bad_input(bad):
    with pytest.raises(ValidationError):
        ShortcutParams.model_validate(bad)


def test_defaults_follow_the_paper():
    params = ShortcutParams()
    assert params.train_colour_noise == (0.1, 0.2) and params.test_colour_noise == 0.9
    assert params.label_noise == 0.25 and params.hidden_dim == 128
    assert (params.steps, params.penalty_anneal_steps) == (501, 190)


def test_stop_request_interrupts_the_run():
    params = ShortcutParams.model_validate(ShortcutExperiment.presets["tiny"])
    with pytest.raises(StopRequested):
        ShortcutExperiment().run(params, LocalContext(stop=True))


def test_example_finding_claims_declared_metrics():
    assert EXAMPLE_FINDING["kind"] in {"theory", "fix", "observation"}
    assert EXAMPLE_FINDING["seeds"] == 3
    assert EXAMPLE_FINDING["title"] and EXAMPLE_FINDING["summary"] and EXAMPLE_FINDING["references"]
    ShortcutParams.model_validate(EXAMPLE_FINDING["params"])
    for claim in EXAMPLE_FINDING["claims"]:
        assert claim["metric"] in METRICS
        assert claim["direction"] in {"increase", "decrease", "non_inferior"}
        assert 0 < claim.get("min_relative_effect", claim.get("margin")) < 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_cuda():
    results, _ = run_locally(ShortcutExperiment, preset="tiny", seed=0, device="cuda")
    assert results[INTERVENTION]["test_accuracy"] > results[BASELINE]["test_accuracy"]
