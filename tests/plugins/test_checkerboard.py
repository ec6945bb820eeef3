"""The checkerboard plugin: transposed conv k3 s2 paints checkerboards, resize-convolution does not."""

import io
import math

import pytest
import torch
from interp_registry.sdk import BASELINE, INTERVENTION, Axis, LocalContext, StopRequested, run_locally
from PIL import Image
from pydantic import ValidationError

from plugins.checkerboard import EXAMPLE_FINDING, CheckerboardExperiment
from plugins.checkerboard.experiment import (
    SAMPLE_HEIGHT,
    SAMPLE_WIDTH,
    checkerboard_energy,
    make_images,
    overlap_ratio,
)
from plugins.registry import declaration_errors
from registry.findings.models import Finding

METRICS = {metric.name for metric in CheckerboardExperiment.metrics}


@pytest.fixture(scope="module")
def tiny_runs():
    return {seed: run_locally(CheckerboardExperiment, preset="tiny", seed=seed) for seed in range(3)}


def test_declaration():
    assert declaration_errors(CheckerboardExperiment) == []
    assert CheckerboardExperiment.name == "checkerboard"
    assert CheckerboardExperiment.version == "1.0.0"
    assert CheckerboardExperiment.arms == (BASELINE, INTERVENTION)
    assert METRICS == {"checkerboard_energy", "pooled_mse", "full_mse", "overlap_ratio"}
    assert CheckerboardExperiment.metric("checkerboard_energy").axis is Axis.SAFETY
    assert CheckerboardExperiment.metric("pooled_mse").axis is Axis.CAPABILITY
    assert not any(metric.higher_is_better for metric in CheckerboardExperiment.metrics)
    assert {"tiny", "gpu"} <= set(CheckerboardExperiment.presets)
    for preset in CheckerboardExperiment.presets.values():
        CheckerboardExperiment.Params.model_validate(preset)


def test_example_finding_claims_declared_metrics():
    assert EXAMPLE_FINDING["kind"] in {"theory", "fix", "observation"}
    CheckerboardExperiment.Params.model_validate(EXAMPLE_FINDING["params"])
    assert EXAMPLE_FINDING["claims"]
    for claim in EXAMPLE_FINDING["claims"]:
        assert claim["metric"] in METRICS
        assert claim["direction"] in {"increase", "decrease", "non_inferior"}


def test_example_finding_carries_both_loss_settings():
    """The pooled loss (blind to the Nyquist components) and plain MSE, as separate experiments."""
    main = CheckerboardExperiment.Params.model_validate(EXAMPLE_FINDING["params"])
    (extra,) = EXAMPLE_FINDING["more_experiments"]
    other = CheckerboardExperiment.Params.model_validate(extra["params"])
    assert {main.loss, other.loss} == {"pooled", "full"}
    assert "loss=full" in extra["label"]
    assert 'loss="pooled"' in EXAMPLE_FINDING["summary"]
    assert 'loss="full"' in EXAMPLE_FINDING["summary"]


@pytest.mark.django_db
@pytest.mark.parametrize("preset", [None, "tiny"])
def test_the_example_loader_creates_both_loss_settings(preset):
    """The embedded default's loader gives the checkerboard finding one experiment per loss setting
    (with EXAMPLES_PRESET=tiny, the preset under each experiment's own parameters)."""
    from registry.findings.examples import examples_load

    examples_load(reproduce=False, preset=preset)
    finding = Finding.objects.get(title=EXAMPLE_FINDING["title"])
    experiments = list(finding.experiments.order_by("id"))
    assert [(e.plugin, e.params["loss"]) for e in experiments] == [("checkerboard", "pooled"), ("checkerboard", "full")]
    assert not experiments[1].reproductions.exists()  # reproduce=False queues nothing
    # the second setting carries its label (API, dashboard); the first has none
    assert [e.label for e in experiments] == ["", EXAMPLE_FINDING["more_experiments"][0]["label"]]
    if preset == "tiny":
        for experiment in experiments:
            assert experiment.params["steps"] == CheckerboardExperiment.presets["tiny"]["steps"]


@pytest.mark.parametrize("seed", range(3))
def test_every_metric_of_every_arm_is_a_finite_float(tiny_runs, seed):
    results, _ = tiny_runs[seed]
    assert set(results) == {BASELINE, INTERVENTION}
    for values in results.values():
        assert set(values) == METRICS
        assert all(type(value) is float and math.isfinite(value) for value in values.values())
        assert 0.0 <= values["checkerboard_energy"] <= 1.0


@pytest.mark.parametrize("seed", range(3))
def test_resize_convolution_has_less_checkerboard(tiny_runs, seed):
    results, _ = tiny_runs[seed]
    assert results[INTERVENTION]["checkerboard_energy"] < results[BASELINE]["checkerboard_energy"]


def test_overlap_ratio_is_exact(tiny_runs):
    results, _ = tiny_runs[0]
    assert results[BASELINE]["overlap_ratio"] == 4.0
    assert results[INTERVENTION]["overlap_ratio"] == 1.0
    assert overlap_ratio("deconv") == 4.0
    assert overlap_ratio("resize") == 1.0


def test_samples_png_shows_target_and_both_arms(tiny_runs):
    _, ctx = tiny_runs[0]
    image = Image.open(io.BytesIO(ctx.artifacts["samples.png"]))
    image.load()
    assert image.format == "PNG"
    assert image.size == (SAMPLE_WIDTH, SAMPLE_HEIGHT)
    assert image.mode == "L"


def test_progress_reaches_one_and_logs(tiny_runs):
    _, ctx = tiny_runs[0]
    fractions = [fraction for fraction, _ in ctx.progress_log]
    assert fractions[-1] == pytest.approx(1.0)
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions == sorted(fractions)
    assert any(0.4 < f < 0.6 for f in fractions), "progress spans both arms"
    assert ctx.logs


def test_same_seed_same_results(tiny_runs):
    again, _ = run_locally(CheckerboardExperiment, preset="tiny", seed=0)
    assert again == tiny_runs[0][0]


def test_stop_request_raises():
    params = CheckerboardExperiment.Params.model_validate(CheckerboardExperiment.presets["tiny"])
    ctx = LocalContext(seed=0, stop=True)
    with pytest.raises(StopRequested):
        CheckerboardExperiment().run(params, ctx)


@pytest.mark.parametrize(
    "bad",
    [
        {"steps": "many"},
        {"steps": 0},
        {"lr": -1.0},
        {"channels": 2.5},
        {"loss": "l1"},
        {"learning_rate": 0.1},  # unknown field
    ],
)
def test_params_validation_rejects(bad):
    with pytest.raises(ValidationError):
        CheckerboardExperiment.Params.model_validate(bad)


def test_params_defaults_and_null_control():
    params = CheckerboardExperiment.Params()
    assert params.loss == "pooled"
    assert CheckerboardExperiment.Params(loss="full").loss == "full"


def test_checkerboard_energy_of_known_images():
    params = CheckerboardExperiment.Params()
    smooth = make_images(8, torch.Generator().manual_seed(0), params)
    assert checkerboard_energy(smooth) < 1e-6
    y, x = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    board = ((-1.0) ** (x + y)).view(1, 1, 32, 32)
    assert checkerboard_energy(board) == pytest.approx(1.0, abs=1e-3)  # the Hann window spreads a little
    stripes = ((-1.0) ** x).float().view(1, 1, 32, 32)  # (0, pi)
    assert checkerboard_energy(stripes) == pytest.approx(1.0, abs=1e-3)
    assert 0.02 < checkerboard_energy(smooth[:1] + 0.05 * board) < 0.2


@pytest.mark.slow
def test_default_parameters_reproduce_the_paper():
    """Default run, one seed: an order of magnitude less artifact energy, the benchmark about equal."""
    results, _ = run_locally(CheckerboardExperiment, seed=0)
    baseline, intervention = results[BASELINE], results[INTERVENTION]
    assert intervention["checkerboard_energy"] < 0.1 * baseline["checkerboard_energy"]
    assert intervention["pooled_mse"] < 1.05 * baseline["pooled_mse"]
