"""The superposition plugin: sparse inputs make a toy model represent more features than dimensions."""

import io
import math

import pytest
import torch
from interp_registry.sdk import (
    BASELINE,
    INTERVENTION,
    Axis,
    LocalContext,
    StopRequested,
    run_locally,
    run_seeds_locally,
)
from PIL import Image
from pydantic import ValidationError

from plugins.registry import declaration_errors
from plugins.superposition import EXAMPLE_FINDING, SuperpositionExperiment
from plugins.superposition.experiment import feature_stats, is_regular_pentagon, sample_features

METRICS = {metric.name for metric in SuperpositionExperiment.metrics}


@pytest.fixture(scope="module")
def tiny_runs():
    return {seed: run_locally(SuperpositionExperiment, preset="tiny", seed=seed) for seed in range(3)}


def pentagon(radius: float = 1.0, offset_deg: float = 10.0) -> torch.Tensor:
    angles = torch.deg2rad(torch.arange(5) * 72.0 + offset_deg)
    return radius * torch.stack([torch.cos(angles), torch.sin(angles)])


def test_declaration():
    assert declaration_errors(SuperpositionExperiment) == []
    assert SuperpositionExperiment.name == "superposition"
    assert SuperpositionExperiment.version == "1.1.0"
    assert SuperpositionExperiment.arms == (BASELINE, INTERVENTION)
    assert METRICS == {
        "monosemanticity",
        "weighted_loss",
        "features_represented",
        "features_in_superposition",
        "pentagon",
    }
    assert SuperpositionExperiment.metric("monosemanticity").axis is Axis.SAFETY
    assert SuperpositionExperiment.metric("weighted_loss").axis is Axis.CAPABILITY
    assert {"tiny", "gpu"} <= set(SuperpositionExperiment.presets)
    for preset in SuperpositionExperiment.presets.values():
        SuperpositionExperiment.Params.model_validate(preset)


def test_example_finding_claims_declared_metrics():
    assert EXAMPLE_FINDING["kind"] in {"theory", "fix", "observation"}
    SuperpositionExperiment.Params.model_validate(EXAMPLE_FINDING["params"])
    assert EXAMPLE_FINDING["claims"]
    for claim in EXAMPLE_FINDING["claims"]:
        assert claim["metric"] in METRICS
        assert claim["direction"] in {"increase", "decrease", "non_inferior"}


@pytest.mark.parametrize("seed", range(3))
def test_every_metric_of_every_arm_is_a_finite_float(tiny_runs, seed):
    results, _ = tiny_runs[seed]
    assert set(results) == {BASELINE, INTERVENTION}
    for values in results.values():
        assert set(values) == METRICS
        assert all(type(value) is float and math.isfinite(value) for value in values.values())
        assert 0.0 <= values["monosemanticity"] <= 1.0
        assert values["pentagon"] in (0.0, 1.0)
        assert 0.0 <= values["features_in_superposition"] <= values["features_represented"] <= 20


@pytest.mark.parametrize("seed", range(3))
def test_sparsity_puts_more_features_in_superposition(tiny_runs, seed):
    results, _ = tiny_runs[seed]
    dense, sparse = results[BASELINE], results[INTERVENTION]
    assert 4 <= dense["features_represented"] <= 6  # the 5 most important, one per dimension
    assert sparse["features_represented"] > 5
    assert sparse["features_represented"] > dense["features_represented"]
    assert sparse["features_in_superposition"] > dense["features_in_superposition"]
    assert sparse["monosemanticity"] < dense["monosemanticity"]
    assert dense["pentagon"] == 0.0


def test_artifact_progress_and_logs(tiny_runs):
    _, ctx = tiny_runs[0]
    image = Image.open(io.BytesIO(ctx.artifacts["wtw.png"]))
    image.load()
    assert image.format == "PNG" and image.mode == "RGB"
    fractions = [fraction for fraction, _ in ctx.progress_log]
    assert fractions[-1] == pytest.approx(1.0)
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions == sorted(fractions)
    assert ctx.logs


def test_copy_is_selected_on_data_apart_from_the_reported(tiny_runs):
    """The copy is chosen on one held-out sample and the metrics come from another."""
    results, ctx = tiny_runs[0]
    for arm in (BASELINE, INTERVENTION):
        (line,) = [log for log in ctx.logs if log.startswith(f"{arm}: copy ") and "selected on a separate" in log]
        selection_loss = float(line.split("there ")[1].split(";")[0])
        reported_loss = float(line.split("reported sample ")[1].rstrip(")"))
        assert reported_loss == pytest.approx(results[arm]["weighted_loss"], rel=1e-5)
        assert selection_loss != reported_loss  # two different samples
    for metric in SuperpositionExperiment.metrics:
        assert metric.version == 2  # the definition changed with held-out selection


@pytest.mark.parametrize("seed", range(3))
def test_training_curve_is_logged_for_both_arms(tiny_runs, seed):
    """Series: each arm's train_loss (the n=20 model's loss on the training batch, mean over the seed's
    copies) at step 1, every steps // 100 and the last step; it falls in both arms."""
    _, ctx = tiny_runs[seed]
    steps = SuperpositionExperiment.presets["tiny"]["steps"]
    curves = {(s["arm"], s["name"]): s for s in ctx.series}
    assert set(curves) == {(BASELINE, "train_loss"), (INTERVENTION, "train_loss")}
    for arm in (BASELINE, INTERVENTION):
        curve = curves[(arm, "train_loss")]
        assert curve["steps"][0] == 1 and curve["steps"][-1] == steps and len(curve["steps"]) == 101
        assert all(math.isfinite(v) and v >= 0.0 for v in curve["values"])
        # measured (seeds 0-2): dense 0.56-1.07 -> 0.046-0.047, sparse 0.006-0.009 -> 0.0003-0.0009
        assert curve["values"][-1] < 0.25 * curve["values"][0]
    # dense inputs carry far more signal per sample than 99%-sparse ones
    assert curves[(INTERVENTION, "train_loss")]["values"][-1] < curves[(BASELINE, "train_loss")]["values"][-1]


def test_same_seed_same_results(tiny_runs):
    again, _ = run_locally(SuperpositionExperiment, preset="tiny", seed=0)
    assert again == tiny_runs[0][0]


def test_stop_request_raises():
    params = SuperpositionExperiment.Params.model_validate(SuperpositionExperiment.presets["tiny"])
    with pytest.raises(StopRequested):
        SuperpositionExperiment().run(params, LocalContext(seed=0, stop=True))


def test_seeds_trained_in_parallel_match_each_seed_alone(tiny_runs):
    """Seeds 0-2 as one batched model (stacked weights, per-seed generators) give each seed exactly
    what it gives alone on the CPU: results, the W^T W image, the progress messages."""
    assert SuperpositionExperiment.batched_seeds
    batched = run_seeds_locally(SuperpositionExperiment, preset="tiny", seeds=[0, 1, 2])
    assert [ctx.seed for _, ctx in batched] == [0, 1, 2]
    for seed, (results, ctx) in enumerate(batched):
        alone, alone_ctx = tiny_runs[seed]
        assert results == alone, seed
        assert ctx.artifacts["wtw.png"] == alone_ctx.artifacts["wtw.png"]
        assert ctx.progress_log == alone_ctx.progress_log
        assert ctx.series == alone_ctx.series  # each seed's context gets its own curve
        assert any("seeds [0, 1, 2] trained as one batched model" in line for line in ctx.logs)
    assert len({repr(results) for results, _ in batched}) == 3  # the seeds differ from one another
    assert len({repr(ctx.series) for _, ctx in batched}) == 3


def test_a_stop_request_on_one_seed_stops_the_batch():
    params = SuperpositionExperiment.Params.model_validate(SuperpositionExperiment.presets["tiny"])
    with pytest.raises(StopRequested):
        SuperpositionExperiment().run_seeds(params, [LocalContext(seed=0), LocalContext(seed=1, stop=True)])


@pytest.mark.parametrize(
    "bad",
    [
        {"steps": "many"},
        {"sparsity": 1.0},
        {"sparsity": -0.1},
        {"n_features": 1},
        {"n_features": 5, "n_hidden": 5},  # no fewer dimensions than features
        {"instances": 0},
        {"feature_probability": 0.01},  # unknown field
    ],
)
def test_params_validation_rejects(bad):
    with pytest.raises(ValidationError):
        SuperpositionExperiment.Params.model_validate(bad)


def test_sample_features_sparsity():
    generator = torch.Generator().manual_seed(0)
    x = sample_features((100_000, 5), 0.9, torch.device("cpu"), generator)
    assert (x > 0).float().mean().item() == pytest.approx(0.1, abs=0.005)
    assert x.max() <= 1.0 and x.min() >= 0.0
    assert x[x > 0].mean().item() == pytest.approx(0.5, abs=0.01)


def test_feature_stats():
    orthogonal = torch.zeros(5, 20)
    orthogonal[:, :5] = torch.eye(5)
    stats = feature_stats(orthogonal, 0.5, 0.1)
    assert (stats["represented"], stats["superposed"], stats["monosemanticity"]) == (5, 0, 1.0)
    antipodal = orthogonal.clone()
    antipodal[0, 5] = -1.0  # feature 5 shares feature 0's direction, with the opposite sign
    stats = feature_stats(antipodal, 0.5, 0.1)
    assert (stats["represented"], stats["superposed"]) == (6, 2)
    assert stats["monosemanticity"] == pytest.approx(4 / 6)


def test_pentagon_detection():
    assert is_regular_pentagon(pentagon(), 0.5, 10.0)
    assert is_regular_pentagon(pentagon(offset_deg=-170.0)[:, [3, 0, 4, 1, 2]], 0.5, 10.0)
    assert not is_regular_pentagon(pentagon(radius=0.3), 0.5, 10.0)  # not represented
    skewed = pentagon()
    skewed[:, 0] = torch.tensor([math.cos(math.radians(30.0)), math.sin(math.radians(30.0))])
    assert not is_regular_pentagon(skewed, 0.5, 10.0)
    square_and_one = torch.tensor([[1.0, 0.0, -1.0, 0.0, 0.7], [0.0, 1.0, 0.0, -1.0, 0.7]])
    assert not is_regular_pentagon(square_and_one, 0.5, 10.0)


@pytest.mark.slow
def test_default_parameters_reproduce_the_paper():
    """Default run, one seed: 5 orthogonal features when dense, many in superposition when sparse."""
    results, _ = run_locally(SuperpositionExperiment, seed=0)
    dense, sparse = results[BASELINE], results[INTERVENTION]
    assert dense["features_represented"] == 5 and dense["monosemanticity"] == 1.0
    assert sparse["features_represented"] >= 10
    assert sparse["monosemanticity"] < 0.5
    assert sparse["pentagon"] == 1.0
