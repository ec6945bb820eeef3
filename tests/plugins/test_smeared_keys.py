"""The smeared-keys plugin (Olsson et al. 2022): one attention layer with smeared keys forms induction
heads on the ordinary next-token loss, one layer with plain keys does not."""

import json
import math

import pytest
import torch
from interp_registry.sdk import BASELINE, INTERVENTION, Axis, LocalContext, Scale, StopRequested, run_locally
from interp_registry.testing import assert_contract, validate_results
from pydantic import ValidationError

from plugins.induction.experiment import AttentionLayer, make_batch
from plugins.registry import all_plugins
from plugins.smeared_keys import EXAMPLE_FINDING, SmearedKeysExperiment
from plugins.smeared_keys.experiment import SmearedAttentionLayer, SmearedKeysParams, build_model, smear

METRICS = {metric.name for metric in SmearedKeysExperiment.metrics}
SEEDS = range(2)


@pytest.fixture(scope="module")
def tiny_runs():
    torch.set_num_threads(1)
    return {seed: run_locally(SmearedKeysExperiment, preset="tiny", seed=seed) for seed in SEEDS}


def test_contract_and_registration():
    assert_contract(SmearedKeysExperiment)
    entry = all_plugins()["smeared_keys"]  # registered through the pyproject entry point
    assert entry.available and entry.experiment is SmearedKeysExperiment
    assert SmearedKeysExperiment.arms == (BASELINE, INTERVENTION)
    assert {m.name: (m.axis, m.scale) for m in SmearedKeysExperiment.metrics} == {
        "induction_score": (Axis.SAFETY, Scale.PROPORTION),
        "repeat_accuracy": (Axis.CAPABILITY, Scale.PROPORTION),
        "repeat_loss": (Axis.CAPABILITY, Scale.RATIO),
    }
    assert "Safety because" in SmearedKeysExperiment.metric("induction_score").description
    assert SmearedKeysExperiment.recommended_seeds == 5
    assert {"tiny", "gpu"} <= set(SmearedKeysExperiment.presets)
    import plugins.smeared_keys.experiment as module

    assert "arXiv:2209.11895" in module.__doc__ and "Why this safety label" in module.__doc__


@pytest.mark.parametrize("seed", SEEDS)
def test_results_pass_the_contract_and_are_bounded(tiny_runs, seed):
    results, ctx = tiny_runs[seed]
    rows = validate_results(SmearedKeysExperiment, results)
    assert {(row.arm, row.metric) for row in rows} == {(arm, m) for arm in (BASELINE, INTERVENTION) for m in METRICS}
    for arm in results.values():
        assert all(type(value) is float and math.isfinite(value) for value in arm.values())
        assert 0.0 <= arm["induction_score"] <= 1.0 and 0.0 <= arm["repeat_accuracy"] <= 1.0
        assert arm["repeat_loss"] > 0.0
    assert ctx.progress_log[-1][0] == pytest.approx(1.0)
    for arm in (BASELINE, INTERVENTION):
        assert ctx.artifacts[f"attention_{arm}.png"].startswith(b"\x89PNG")
    curves = json.loads(ctx.artifacts["repeat_loss_curves.json"])["curves"]
    assert set(curves) == {BASELINE, INTERVENTION}


@pytest.mark.parametrize("seed", SEEDS)
def test_smeared_keys_form_induction_heads_where_plain_keys_do_not(tiny_runs, seed):
    """The paper's direction on the tiny preset (measured: score ~0.22 -> ~0.66, accuracy ~0.33 -> ~0.87)."""
    results, _ = tiny_runs[seed]
    baseline, smeared = results[BASELINE], results[INTERVENTION]
    assert smeared["induction_score"] > baseline["induction_score"] + 0.25
    assert smeared["repeat_accuracy"] > baseline["repeat_accuracy"] + 0.3
    assert smeared["repeat_loss"] < 0.5 * baseline["repeat_loss"]


@pytest.mark.parametrize("seed", SEEDS)
def test_series_are_logged_per_arm_within_bounds(tiny_runs, seed):
    _, ctx = tiny_runs[seed]
    series = {(s["arm"], s["name"]): s for s in ctx.series}
    assert set(series) == {(arm, m) for arm in (BASELINE, INTERVENTION) for m in METRICS}
    steps = SmearedKeysExperiment.presets["tiny"]["steps"]
    for s in series.values():
        assert s["steps"][0] == 0 and s["steps"][-1] == steps
        assert s["steps"] == sorted(set(s["steps"])) and len(s["steps"]) <= 200
        assert all(math.isfinite(v) for v in s["values"])
    # the last point of each curve is the reported metric
    results, _ = tiny_runs[seed]
    for arm in (BASELINE, INTERVENTION):
        assert series[(arm, "induction_score")]["values"][-1] == pytest.approx(results[arm]["induction_score"])


def test_series_are_thinned_to_at_most_200_points():
    _, ctx = run_locally(
        SmearedKeysExperiment, {"steps": 450, "eval_every": 1, "eval_size": 8, "batch_size": 2}, preset="tiny"
    )
    for s in ctx.series:
        assert len(s["steps"]) <= 200 and s["steps"][-1] == 450


def test_same_seed_gives_the_same_results(tiny_runs):
    again, _ = run_locally(SmearedKeysExperiment, preset="tiny", seed=0)
    assert again == tiny_runs[0][0]


def test_smear_mixes_each_key_with_the_previous_one():
    keys = torch.arange(2 * 2 * 3 * 1, dtype=torch.float32).view(2, 2, 3, 1)  # (B, H, T, D)
    logits = torch.tensor([0.0, 100.0])  # head 0: an even mix; head 1: its own key only
    smeared = smear(keys, logits)
    assert smeared[0, 0, :, 0].tolist() == [0.0, 0.5, 1.5]  # keys 0, 1, 2; the key before the first is zero
    assert torch.allclose(smeared[:, 1], keys[:, 1])
    logits = torch.tensor([-100.0, -100.0])  # the previous key only
    assert smear(keys, logits)[1, 0, :, 0].tolist() == [0.0, 6.0, 7.0]


def test_both_arms_start_from_the_same_weights_and_smearing_is_the_only_difference():
    params = SmearedKeysParams.model_validate(SmearedKeysExperiment.presets["tiny"])
    torch.manual_seed(3)
    plain = build_model(params, smeared=False)
    torch.manual_seed(3)
    smeared = build_model(params, smeared=True)
    assert type(plain.layers[0]) is AttentionLayer and isinstance(smeared.layers[0], SmearedAttentionLayer)
    plain_state, smeared_state = plain.state_dict(), smeared.state_dict()
    assert set(smeared_state) - set(plain_state) == {"layers.0.smear_logits"}
    assert all(torch.equal(plain_state[k], smeared_state[k]) for k in plain_state)
    # With every head keyed on its own token only, the smeared layer is the plain layer.
    with torch.no_grad():
        smeared.layers[0].smear_logits.fill_(100.0)
    batch = make_batch(params.data_params(), 4, torch.Generator().manual_seed(0), torch.device("cpu"))
    with torch.no_grad():
        assert torch.allclose(plain(batch.tokens)[0], smeared(batch.tokens)[0], atol=1e-5)
        fused = smeared(batch.tokens)[0]
        explicit, patterns = smeared(batch.tokens, with_patterns=True)
    assert torch.allclose(fused, explicit, atol=1e-5) and patterns[0].shape == (4, params.n_heads, 32, 32)


def test_stop_request_raises():
    params = SmearedKeysParams.model_validate(SmearedKeysExperiment.presets["tiny"])
    with pytest.raises(StopRequested):
        SmearedKeysExperiment().run(params, LocalContext(seed=0, stop=True))


@pytest.mark.parametrize(
    "bad",
    [
        {"min_segment": 12, "max_segment": 10},
        {"seq_len": 40, "max_segment": 20},  # no room for a prefix
        {"d_model": 30, "n_heads": 4},
        {"smear_init": "half"},
        {"steps": 0},
        {"train_on_repeat_only": True},  # not a parameter here: the loss is always the ordinary one
    ],
)
def test_params_validation_rejects(bad):
    with pytest.raises(ValidationError):
        SmearedKeysParams.model_validate(bad)


def test_example_finding_claims_follow_the_scale_rules():
    assert EXAMPLE_FINDING["kind"] in {"theory", "fix", "observation"}
    SmearedKeysParams.model_validate(EXAMPLE_FINDING["params"])
    assert EXAMPLE_FINDING["seeds"] == SmearedKeysExperiment.recommended_seeds
    assert {claim["metric"] for claim in EXAMPLE_FINDING["claims"]} == METRICS
    for claim in EXAMPLE_FINDING["claims"]:
        metric = SmearedKeysExperiment.metric(claim["metric"])
        unit = claim.get("threshold_unit", "relative")
        threshold = claim["min_relative_effect"]
        assert claim["statement"] and 0 < threshold < 1
        assert unit == ("relative" if metric.scale is Scale.RATIO else "absolute")
        if metric.scale is Scale.PROPORTION:
            assert f"{round(threshold * 100)} points" in claim["statement"]
