"""The sparse autoencoder plugin: an L1 penalty recovers the superposed ground-truth features."""

import math

import pytest
import torch
from interp_registry.sdk import BASELINE, INTERVENTION, run_locally
from pydantic import ValidationError

from plugins.sae import EXAMPLE_FINDING, SparseAutoencoderExperiment
from plugins.sae.experiment import feature_probabilities

METRICS = {metric.name for metric in SparseAutoencoderExperiment.metrics}


@pytest.fixture(scope="module")
def tiny_runs():
    return {seed: run_locally(SparseAutoencoderExperiment, preset="tiny", seed=seed) for seed in range(3)}


def test_declares_the_three_metrics_and_presets():
    assert METRICS == {"mmcs", "fvu", "l0"}
    assert SparseAutoencoderExperiment.name == "sae"
    assert SparseAutoencoderExperiment.arms == (BASELINE, INTERVENTION)
    assert {"tiny", "gpu"} <= set(SparseAutoencoderExperiment.presets)
    for preset in SparseAutoencoderExperiment.presets.values():
        SparseAutoencoderExperiment.Params.model_validate(preset)


@pytest.mark.parametrize("seed", range(3))
def test_l1_recovers_the_true_features(tiny_runs, seed):
    results, _ = tiny_runs[seed]
    assert results[INTERVENTION]["mmcs"] > results[BASELINE]["mmcs"] + 0.1
    # The trade-off: sparser codes reconstruct worse.
    assert results[INTERVENTION]["l0"] < results[BASELINE]["l0"]
    assert results[INTERVENTION]["fvu"] > results[BASELINE]["fvu"]


@pytest.mark.parametrize("seed", range(3))
def test_every_metric_of_every_arm_is_a_finite_float(tiny_runs, seed):
    results, ctx = tiny_runs[seed]
    assert set(results) == {BASELINE, INTERVENTION}
    for arm in results.values():
        assert set(arm) == METRICS
        assert all(type(value) is float and math.isfinite(value) for value in arm.values())
        assert 0.0 <= arm["mmcs"] <= 1.0 + 1e-6
    assert ctx.progress_log[-1][0] == pytest.approx(1.0)
    assert all(0.0 <= fraction <= 1.0 for fraction, _ in ctx.progress_log)
    assert ctx.artifacts["cosines.png"].startswith(b"\x89PNG")
    assert ctx.logs


def test_same_seed_gives_the_same_results(tiny_runs):
    again, _ = run_locally(SparseAutoencoderExperiment, preset="tiny", seed=0)
    assert again == tiny_runs[0][0]


def test_feature_probabilities_decay_and_sum_to_the_mean():
    params = SparseAutoencoderExperiment.Params()
    probabilities = feature_probabilities(params)
    assert probabilities.shape == (params.n_features,)
    assert torch.all(probabilities[1:] <= probabilities[:-1])
    assert probabilities.sum().item() == pytest.approx(params.mean_active_features, rel=1e-4)


@pytest.mark.parametrize(
    "bad",
    [
        {"input_dim": 0},
        {"l1_coefficient": 0.0},
        {"l1_coefficient": -1.0},
        {"steps": 0},
        {"learning_rate": 0.0},
        {"probability_decay": 1.5},
        {"n_features": 8, "mean_active_features": 9.0},
        {"steps": "many"},
        {"unknown_parameter": 1},
    ],
)
def test_params_reject_bad_input(bad):
    with pytest.raises(ValidationError):
        SparseAutoencoderExperiment.Params.model_validate(bad)


def test_stop_request_interrupts_the_run():
    from interp_registry.sdk import LocalContext, StopRequested

    params = SparseAutoencoderExperiment.Params.model_validate(SparseAutoencoderExperiment.presets["tiny"])
    with pytest.raises(StopRequested):
        SparseAutoencoderExperiment().run(params, LocalContext(stop=True))


def test_example_finding_claims_declared_metrics():
    assert EXAMPLE_FINDING["kind"] in {"theory", "fix", "observation"}
    assert EXAMPLE_FINDING["seeds"] == 3
    SparseAutoencoderExperiment.Params.model_validate(EXAMPLE_FINDING["params"])
    for claim in EXAMPLE_FINDING["claims"]:
        assert claim["metric"] in METRICS
        assert claim["direction"] in {"increase", "decrease", "non_inferior"}
