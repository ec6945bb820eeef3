"""The grokking plugin: weight decay makes modular addition generalise with a sparse Fourier embedding."""

import json
import math

import pytest
import torch
from interp_registry.sdk import BASELINE, INTERVENTION, LocalContext, NotReached, Scale, StopRequested, run_locally
from pydantic import ValidationError

from plugins.grokking import EXAMPLE_FINDING, GrokkingExperiment
from plugins.grokking.experiment import fourier_power, top_k_share
from registry.reproductions.services import validate_results

METRICS = {metric.name for metric in GrokkingExperiment.metrics}


@pytest.fixture(scope="module")
def tiny_runs():
    return {seed: run_locally(GrokkingExperiment, preset="tiny", seed=seed) for seed in range(3)}


def test_declares_the_four_metrics_and_presets():
    assert METRICS == {"fourier_sparsity", "test_accuracy", "steps_to_test_99", "steps_to_train_99"}
    assert GrokkingExperiment.name == "grokking"
    assert GrokkingExperiment.arms == (BASELINE, INTERVENTION)
    assert {"tiny", "gpu"} <= set(GrokkingExperiment.presets)
    for preset in GrokkingExperiment.presets.values():
        GrokkingExperiment.Params.model_validate(preset)
    scales = {m.name: (m.scale, m.time_to_event, m.version) for m in GrokkingExperiment.metrics}
    assert scales == {
        "fourier_sparsity": (Scale.PROPORTION, False, 1),
        "test_accuracy": (Scale.PROPORTION, False, 1),
        # version 2: "not reached" is censored, no longer the budget stored as a value
        "steps_to_test_99": (Scale.RATIO, True, 2),
        "steps_to_train_99": (Scale.RATIO, True, 2),
    }


@pytest.mark.parametrize("seed", range(3))
def test_weight_decay_generalises_with_sparse_fourier_embedding(tiny_runs, seed):
    results, _ = tiny_runs[seed]
    baseline, intervention = results[BASELINE], results[INTERVENTION]
    assert intervention["test_accuracy"] > baseline["test_accuracy"] + 0.3
    assert baseline["test_accuracy"] < 0.2  # memorises without generalising
    assert intervention["fourier_sparsity"] > baseline["fourier_sparsity"] + 0.1
    # Both arms memorise the training set early.
    steps = GrokkingExperiment.presets["tiny"]["steps"]
    assert baseline["steps_to_train_99"] < steps / 4
    assert intervention["steps_to_train_99"] < steps / 4


@pytest.mark.parametrize("seed", range(3))
def test_every_metric_of_every_arm_is_a_finite_float_or_not_reached(tiny_runs, seed):
    results, ctx = tiny_runs[seed]
    steps = GrokkingExperiment.presets["tiny"]["steps"]
    assert set(results) == {BASELINE, INTERVENTION}
    for arm in results.values():
        assert set(arm) == METRICS
        for name, value in arm.items():
            if isinstance(value, NotReached):
                assert GrokkingExperiment.metric(name).time_to_event
            else:
                assert type(value) is float and math.isfinite(value)
        assert 0.0 <= arm["test_accuracy"] <= 1.0
        assert 0.0 < arm["fourier_sparsity"] <= 1.0 + 1e-6
    reached = results[INTERVENTION]["steps_to_test_99"]
    assert reached == NotReached(budget=float(steps)) or 0 < reached <= steps
    # never reached without weight decay: censored at the budget, not the budget as a value
    assert results[BASELINE]["steps_to_test_99"] == NotReached(budget=float(steps))
    rows = {(row.arm, row.metric): row for row in validate_results(GrokkingExperiment, results)}
    assert rows[BASELINE, "steps_to_test_99"].censored and rows[BASELINE, "steps_to_test_99"].value == steps
    assert not rows[BASELINE, "steps_to_train_99"].censored  # memorised early: a value
    assert ctx.progress_log[-1][0] == pytest.approx(1.0)
    curves = json.loads(ctx.artifacts["curves.json"])
    assert set(curves) == {BASELINE, INTERVENTION}
    assert curves[INTERVENTION]["step"][-1] == steps
    assert len(curves[INTERVENTION]["test_accuracy"]) == len(curves[INTERVENTION]["step"])


def test_steps_to_target_is_not_reached_when_the_budget_is_too_small():
    results, _ = run_locally(GrokkingExperiment, {"steps": 10, "eval_every": 5}, preset="tiny", seed=0)
    for arm in results.values():
        assert arm["steps_to_test_99"] == NotReached(budget=10.0)
        assert arm["steps_to_train_99"] == NotReached(budget=10.0)
    assert all(row.censored == row.metric.startswith("steps_to_") for row in validate_results(GrokkingExperiment,
                                                                                            results))


def test_fourier_sparsity_of_a_pure_frequency_and_of_noise():
    p = 31
    tokens = torch.arange(p, dtype=torch.float32)
    pure = torch.stack([torch.cos(2 * math.pi * 3 * tokens / p), torch.sin(2 * math.pi * 3 * tokens / p)], 1)
    assert top_k_share(fourier_power(pure), 1) == pytest.approx(1.0, abs=1e-5)
    noise = torch.randn(p, 64, generator=torch.Generator().manual_seed(0))
    assert top_k_share(fourier_power(noise), 1) < 0.2
    assert fourier_power(noise).shape == (p // 2,)


@pytest.mark.parametrize(
    "bad",
    [
        {"modulus": 60},  # not a prime
        {"modulus": 3},
        {"train_fraction": 0.0},
        {"train_fraction": 1.0},
        {"weight_decay": -1.0},
        {"learning_rate": 0.0},
        {"steps": 0},
        {"modulus": 23, "top_k_frequencies": 11},
        {"hidden_dim": "wide"},
        {"unknown_parameter": 1},
    ],
)
def test_params_reject_bad_input(bad):
    with pytest.raises(ValidationError):
        GrokkingExperiment.Params.model_validate(bad)


def test_stop_request_interrupts_the_run():
    params = GrokkingExperiment.Params.model_validate(GrokkingExperiment.presets["tiny"])
    with pytest.raises(StopRequested):
        GrokkingExperiment().run(params, LocalContext(stop=True))


def test_example_finding_claims_declared_metrics():
    assert EXAMPLE_FINDING["kind"] in {"theory", "fix", "observation"}
    assert EXAMPLE_FINDING["seeds"] == 6  # see the comment in the example: censored and saturated effects
    GrokkingExperiment.Params.model_validate(EXAMPLE_FINDING["params"])
    for claim in EXAMPLE_FINDING["claims"]:
        assert claim["metric"] in METRICS
        assert claim["direction"] in {"increase", "decrease", "non_inferior"}
