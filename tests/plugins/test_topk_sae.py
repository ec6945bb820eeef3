"""The TopK sparse autoencoder plugin (Gao et al. 2024) against L1 at matched L0, on the sae data."""

import math

import pytest
import torch
from interp_registry.sdk import BASELINE, INTERVENTION, Axis, LocalContext, Scale, StopRequested, run_locally
from pydantic import ValidationError

from plugins.registry import all_plugins, declaration_errors
from plugins.topk_sae import EXAMPLE_FINDING, TopKSparseAutoencoderExperiment, experiment
from plugins.topk_sae.experiment import topk_latents

METRICS = {metric.name for metric in TopKSparseAutoencoderExperiment.metrics}


@pytest.fixture(scope="module")
def tiny_runs():
    return {seed: run_locally(TopKSparseAutoencoderExperiment, preset="tiny", seed=seed) for seed in range(2)}


def test_declaration_and_registration():
    assert declaration_errors(TopKSparseAutoencoderExperiment) == []
    entry = all_plugins()["topk_sae"]  # registered through the pyproject entry point, like the built-ins
    assert entry.available and entry.experiment is TopKSparseAutoencoderExperiment
    assert METRICS == {"mmcs", "fvu", "l0", "dead_latents"}
    assert TopKSparseAutoencoderExperiment.metric("mmcs").axis is Axis.SAFETY
    assert "Safety because" in TopKSparseAutoencoderExperiment.metric("mmcs").description
    assert TopKSparseAutoencoderExperiment.metric("fvu").axis is Axis.CAPABILITY
    assert TopKSparseAutoencoderExperiment.metric("l0").axis is Axis.DIAGNOSTIC
    assert TopKSparseAutoencoderExperiment.metric("dead_latents").axis is Axis.DIAGNOSTIC
    assert {"tiny", "gpu"} <= set(TopKSparseAutoencoderExperiment.presets)
    for preset in TopKSparseAutoencoderExperiment.presets.values():
        TopKSparseAutoencoderExperiment.Params.model_validate(preset)


@pytest.mark.parametrize("seed", range(2))
def test_every_metric_of_every_arm_is_a_finite_float(tiny_runs, seed):
    results, ctx = tiny_runs[seed]
    assert set(results) == {BASELINE, INTERVENTION}
    for arm in results.values():
        assert set(arm) == METRICS
        assert all(type(value) is float and math.isfinite(value) for value in arm.values())
        assert 0.0 <= arm["mmcs"] <= 1.0 + 1e-6
        assert 0.0 <= arm["dead_latents"] <= 1.0
    assert ctx.progress_log[-1][0] == pytest.approx(1.0)
    assert ctx.artifacts["cosines.png"].startswith(b"\x89PNG")


@pytest.mark.parametrize("seed", range(2))
def test_topk_is_matched_to_the_l1_arms_l0(tiny_runs, seed):
    results, ctx = tiny_runs[seed]
    (line,) = [log for log in ctx.logs if log.startswith("TopK arm: k = ")]
    k = int(line.split("k = ")[1].split(",")[0])
    assert k == max(1, round(results[BASELINE]["l0"]))
    assert results[INTERVENTION]["l0"] <= k + 1e-6
    assert abs(results[INTERVENTION]["l0"] - results[BASELINE]["l0"]) <= 1.0


@pytest.mark.parametrize("seed", range(2))
def test_topk_reconstructs_better_at_matched_l0(tiny_runs, seed):
    """The paper's capability claim: a better reconstruction at the same L0 (measured: FVU ~0.05 -> ~0.02)."""
    results, _ = tiny_runs[seed]
    assert results[INTERVENTION]["fvu"] < 0.8 * results[BASELINE]["fvu"]


@pytest.mark.xfail(
    strict=True,
    reason="Not reproduced on this data: at the L1 arm's L0 (~15 latents for ~3 true active features) "
    "TopK recovers the true features worse (tiny: MMCS ~0.80 -> ~0.64), with more dead latents "
    "(no AuxK loss). Kept as the paper's expected direction; strict, so a fix shows up.",
)
@pytest.mark.parametrize("seed", range(2))
def test_topk_recovers_the_features_at_least_as_well(tiny_runs, seed):
    results, _ = tiny_runs[seed]
    assert results[INTERVENTION]["mmcs"] >= results[BASELINE]["mmcs"] - 0.02


@pytest.mark.parametrize("seed", range(2))
def test_training_curves_are_logged_for_both_arms(tiny_runs, seed):
    """Series per arm: the training objective and its squared-error part, ~100 points; the
    reconstruction loss falls in both arms; the L1 arm's objective adds its penalty, TopK's has none."""
    _, ctx = tiny_runs[seed]
    steps = TopKSparseAutoencoderExperiment.presets["tiny"]["steps"]
    curves = {(s["arm"], s["name"]): s for s in ctx.series}
    assert set(curves) == {(arm, name) for arm in (BASELINE, INTERVENTION)
                           for name in ("train_loss", "reconstruction_loss")}
    for arm in (BASELINE, INTERVENTION):
        reconstruction = curves[(arm, "reconstruction_loss")]
        assert reconstruction["steps"][0] == 1 and reconstruction["steps"][-1] == steps
        assert len(reconstruction["steps"]) <= 102
        assert reconstruction["values"][-1] < 0.1 * reconstruction["values"][0]  # measured: ~1.6 -> 0.01-0.05
    baseline = curves[(BASELINE, "train_loss")]["values"]
    assert all(t > r for t, r in zip(baseline, curves[(BASELINE, "reconstruction_loss")]["values"], strict=True))
    assert curves[(INTERVENTION, "train_loss")]["values"] == curves[(INTERVENTION, "reconstruction_loss")]["values"]


def test_same_seed_gives_the_same_results(tiny_runs):
    again, _ = run_locally(TopKSparseAutoencoderExperiment, preset="tiny", seed=0)
    assert again == tiny_runs[0][0]


def test_replayed_batches_give_what_drawing_them_again_gives(monkeypatch):
    """The TopK arm reuses the L1 arm's batches when they fit in CACHE_BYTES; with no room it draws the
    same stream again: bit-identical results and curves either way."""
    params = {"steps": 150}
    replayed, replayed_ctx = run_locally(TopKSparseAutoencoderExperiment, params, preset="tiny", seed=0)
    monkeypatch.setattr(experiment, "CACHE_BYTES", 0)
    drawn, drawn_ctx = run_locally(TopKSparseAutoencoderExperiment, params, preset="tiny", seed=0)
    assert drawn == replayed
    assert drawn_ctx.series == replayed_ctx.series


def test_fixed_k_is_used():
    results, ctx = run_locally(TopKSparseAutoencoderExperiment, {"k": 2, "steps": 50}, preset="tiny", seed=0)
    assert results[INTERVENTION]["l0"] <= 2.0
    assert not [log for log in ctx.logs if log.startswith("TopK arm: k = ")]
    assert any("(k=2)" in log for log in ctx.logs)


def test_topk_latents_keeps_the_k_largest_positive_values():
    pre = torch.tensor([[3.0, -1.0, 2.0, 0.5], [-2.0, -1.0, -3.0, 0.25]])
    latents = topk_latents(pre, 2)
    assert latents.tolist() == [[3.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.25]]  # ReLU after the top-k


def test_stop_request_raises():
    params = TopKSparseAutoencoderExperiment.Params.model_validate(TopKSparseAutoencoderExperiment.presets["tiny"])
    with pytest.raises(StopRequested):
        TopKSparseAutoencoderExperiment().run(params, LocalContext(seed=0, stop=True))


@pytest.mark.parametrize(
    "bad",
    [
        {"k": 0},
        {"k": "many"},
        {"k": 10_000},  # more than the 256 latents of the default dictionary
        {"l1_coefficient": 0.0},
        {"aux_k": 32},  # unknown field
    ],
)
def test_params_validation_rejects(bad):
    with pytest.raises(ValidationError):
        TopKSparseAutoencoderExperiment.Params.model_validate(bad)


def test_example_finding_claims_follow_the_scale_rules():
    assert EXAMPLE_FINDING["kind"] in {"theory", "fix", "observation"}
    TopKSparseAutoencoderExperiment.Params.model_validate(EXAMPLE_FINDING["params"])
    assert EXAMPLE_FINDING["claims"]
    for claim in EXAMPLE_FINDING["claims"]:
        metric = TopKSparseAutoencoderExperiment.metric(claim["metric"])
        unit = claim.get("threshold_unit", "relative")
        threshold = claim["margin"] if claim["direction"] == "non_inferior" else claim["min_relative_effect"]
        assert claim["statement"] and 0 < threshold < 1
        assert unit == ("relative" if metric.scale is Scale.RATIO else "absolute")
        if metric.scale is Scale.PROPORTION:
            assert f"{round(threshold * 100)} points" in claim["statement"]


def test_the_batch_replay_stays_within_the_runs_memory_limit():
    """The first arm's batches are kept only within a quarter of what the run's address-space limit
    leaves: a run that fitted its limit before the replay cache existed still fits."""
    import subprocess
    import sys

    code = (
        "import resource, os\n"
        "from plugins.topk_sae.experiment import keep_batches_fits\n"
        "mib = 2**20\n"
        "before = keep_batches_fits(250 * mib)\n"
        "virtual = int(open('/proc/self/statm').read().split()[0]) * os.sysconf('SC_PAGE_SIZE')\n"
        "resource.setrlimit(resource.RLIMIT_AS, (virtual + 600 * mib, resource.RLIM_INFINITY))\n"
        "print(before, keep_batches_fits(250 * mib), keep_batches_fits(100 * mib), keep_batches_fits(600 * mib))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "False", "True", "False"]
