"""The induction-heads plugin: two attention layers form induction heads, one layer does not."""

import json
import math

import pytest
import torch
from interp_registry.sdk import (
    BASELINE,
    INTERVENTION,
    Axis,
    LocalContext,
    NotReached,
    Scale,
    StopRequested,
    run_locally,
)
from pydantic import ValidationError

from plugins.induction import EXAMPLE_FINDING, InductionHeadsExperiment
from plugins.induction.experiment import (
    AttentionOnlyTransformer,
    InductionParams,
    abruptness,
    copying_scores,
    induction_scores,
    make_batch,
)
from plugins.registry import declaration_errors
from registry.reproductions.services import validate_results

METRICS = {metric.name for metric in InductionHeadsExperiment.metrics}


@pytest.fixture(scope="module")
def tiny_runs():
    runs = {seed: run_locally(InductionHeadsExperiment, preset="tiny", seed=seed) for seed in range(3)}
    return runs


def test_declaration():
    assert declaration_errors(InductionHeadsExperiment) == []
    assert InductionHeadsExperiment.name == "induction"
    assert InductionHeadsExperiment.version == "1.2.0"
    assert InductionHeadsExperiment.arms == (BASELINE, INTERVENTION)
    assert METRICS == {
        "induction_score", "repeat_loss", "repeat_accuracy", "phase_change_step", "abruptness", "copying_score",
    }
    axes = {metric.name: metric.axis for metric in InductionHeadsExperiment.metrics}
    assert axes["induction_score"] is Axis.SAFETY
    assert axes["repeat_loss"] is Axis.CAPABILITY and axes["repeat_accuracy"] is Axis.CAPABILITY
    assert axes["phase_change_step"] is Axis.DIAGNOSTIC
    assert axes["abruptness"] is Axis.DIAGNOSTIC and axes["copying_score"] is Axis.DIAGNOSTIC
    assert not InductionHeadsExperiment.metric("repeat_loss").higher_is_better
    assert {"tiny", "gpu"} <= set(InductionHeadsExperiment.presets)
    for preset in InductionHeadsExperiment.presets.values():
        InductionParams.model_validate(preset)
    scales = {m.name: (m.scale, m.time_to_event, m.version) for m in InductionHeadsExperiment.metrics}
    assert scales == {
        "induction_score": (Scale.PROPORTION, False, 1),
        "repeat_loss": (Scale.RATIO, False, 1),
        "repeat_accuracy": (Scale.PROPORTION, False, 1),
        "phase_change_step": (Scale.RATIO, True, 2),  # version 2: censored when not reached
        "abruptness": (Scale.PROPORTION, False, 1),
        "copying_score": (Scale.PROPORTION, False, 1),
    }


@pytest.mark.parametrize("seed", range(3))
def test_two_layers_form_induction_heads(tiny_runs, seed):
    results, _ = tiny_runs[seed]
    one, two = results[BASELINE], results[INTERVENTION]
    assert two["induction_score"] > one["induction_score"] + 0.2
    assert two["repeat_accuracy"] > one["repeat_accuracy"] + 0.2
    assert two["repeat_loss"] < one["repeat_loss"]
    # The phase change happens within the budget for two layers only.
    steps = InductionHeadsExperiment.presets["tiny"]["steps"]
    assert 0 < two["phase_change_step"] < steps
    assert one["phase_change_step"] == NotReached(budget=float(steps))


@pytest.mark.parametrize("seed", range(3))
def test_every_metric_of_every_arm_is_a_finite_float_or_not_reached(tiny_runs, seed):
    results, ctx = tiny_runs[seed]
    assert set(results) == {BASELINE, INTERVENTION}
    for arm in results.values():
        assert set(arm) == METRICS
        for name, value in arm.items():
            if isinstance(value, NotReached):
                assert name == "phase_change_step"
            else:
                assert type(value) is float and math.isfinite(value)
        assert 0.0 <= arm["induction_score"] <= 1.0 + 1e-6
        assert 0.0 <= arm["repeat_accuracy"] <= 1.0
        assert 0.0 <= arm["abruptness"] <= 1.0 and 0.0 <= arm["copying_score"] <= 1.0
    assert validate_results(InductionHeadsExperiment, results)  # the registry accepts every value on its scale
    fractions = [fraction for fraction, _ in ctx.progress_log]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] == pytest.approx(1.0)
    assert ctx.logs
    assert ctx.artifacts["attention_intervention.png"].startswith(b"\x89PNG")
    curves = json.loads(ctx.artifacts["repeat_loss_curves.json"])
    assert set(curves["curves"]) == {BASELINE, INTERVENTION}


def test_phase_change_is_not_reached_when_the_budget_is_too_small():
    results, ctx = run_locally(InductionHeadsExperiment, {"steps": 10, "eval_every": 5}, preset="tiny", seed=0)
    for arm in results.values():
        assert arm["phase_change_step"] == NotReached(budget=10.0)
    assert any("not reached in 10" in line for line in ctx.logs)
    rows = validate_results(InductionHeadsExperiment, results)
    assert {(row.arm, row.value) for row in rows if row.censored} == {(BASELINE, 10.0), (INTERVENTION, 10.0)}


def test_a_loss_below_the_threshold_before_training_is_no_event_at_step_0():
    # A threshold above the untrained model's loss (about ln 16 = 2.8 nats): the event is at the first
    # evaluation after training starts, never at step 0 (not a positive time).
    results, _ = run_locally(InductionHeadsExperiment, {"steps": 10, "eval_every": 5, "phase_threshold": 19.0},
                             preset="tiny", seed=0)
    for arm in results.values():
        assert arm["phase_change_step"] == 5.0


@pytest.mark.parametrize("seed", range(3))
def test_the_trained_induction_head_copies_far_above_a_random_initialisation(tiny_runs, seed):
    results, _ = tiny_runs[seed]
    preset = InductionParams.model_validate(InductionHeadsExperiment.presets["tiny"])
    torch.manual_seed(seed)
    untrained = AttentionOnlyTransformer(preset.vocab_size, preset.seq_len, preset.d_model, preset.n_heads, 2)
    with torch.no_grad():
        untrained_best = float(copying_scores(untrained).max())
    assert results[INTERVENTION]["copying_score"] > untrained_best + 0.5


def test_copying_score_reads_the_sign_of_the_ov_circuit():
    """A head whose OV circuit is the identity copies every token; its negation copies none."""
    vocab = 16
    model = AttentionOnlyTransformer(vocab, 8, vocab, 1, 1)
    with torch.no_grad():
        model.embed.weight.copy_(torch.eye(vocab))
        model.position.weight.zero_()
        model.layers[0].qkv.weight[2 * vocab :].copy_(torch.eye(vocab))
        model.unembed.weight.copy_(torch.eye(vocab))
        model.layers[0].out.weight.copy_(torch.eye(vocab))
        assert copying_scores(model).tolist() == [1.0]
        model.layers[0].out.weight.copy_(-torch.eye(vocab))
        assert copying_scores(model).tolist() == [0.0]


def test_abruptness_separates_a_jump_from_a_steady_rise_and_from_wandering():
    steps = range(0, 1001, 10)
    jump = [(step, 0.05 if step < 500 else 0.8) for step in steps]
    steady = [(step, 0.05 + 0.75 * step / 1000) for step in steps]
    wandering = [(step, 0.05 + 0.02 * (step // 10 % 2)) for step in steps]  # never rises beyond 2 points
    assert abruptness(jump, 100) == pytest.approx(1.0)
    assert abruptness(steady, 100) == pytest.approx(0.1)
    assert abruptness(wandering, 100) == pytest.approx(0.08)  # 2 points against the 25-point floor
    assert abruptness([(0, 0.8), (500, 0.05), (1000, 0.05)], 100) == 0.0  # a fall is no rise
    # A window narrower than the points' spacing still spans one gap; one point is no curve.
    assert abruptness([(0, 0.0), (500, 0.5), (1000, 0.5)], 1) == pytest.approx(1.0)
    assert abruptness([(0, 0.3)], 100) == 0.0


def test_the_ordinary_next_token_loss_is_a_parameter_that_changes_training():
    overrides = {"steps": 10, "eval_every": 5}
    ordinary, _ = run_locally(InductionHeadsExperiment, {**overrides, "train_on_repeat_only": False},
                              preset="tiny", seed=0)
    segment_only, _ = run_locally(InductionHeadsExperiment, overrides, preset="tiny", seed=0)
    assert InductionParams().train_on_repeat_only  # the default is unchanged
    assert ordinary[INTERVENTION]["repeat_loss"] != segment_only[INTERVENTION]["repeat_loss"]


def test_same_seed_gives_the_same_results(tiny_runs):
    again, _ = run_locally(InductionHeadsExperiment, preset="tiny", seed=0)
    assert again == tiny_runs[0][0]


def test_batches_repeat_a_segment_of_random_length_at_the_end():
    params = InductionParams()
    batch = make_batch(params, 200, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert batch.tokens.shape == (200, params.seq_len)
    assert batch.tokens.min() >= 0 and batch.tokens.max() < params.vocab_size
    lengths = batch.segment_len.tolist()
    assert min(lengths) >= params.min_segment and max(lengths) <= params.max_segment
    assert len(set(lengths)) > 3, "segment lengths vary, so position alone cannot find the copy"
    for row, length in zip(batch.tokens, lengths, strict=True):
        assert torch.equal(row[-length:], row[-2 * length : -length])
    assert batch.repeat_mask.sum(dim=1).tolist() == lengths


def test_induction_score_is_one_for_a_perfect_induction_pattern():
    params = InductionParams(seq_len=12, min_segment=3, max_segment=5, vocab_size=8)
    batch = make_batch(params, 4, torch.Generator().manual_seed(1), torch.device("cpu"))
    perfect = torch.zeros(4, 2, params.seq_len, params.seq_len)
    for row in range(4):
        for position in range(params.seq_len):
            perfect[row, 0, position, batch.source[row, position]] = 1.0
    perfect[:, 1] = torch.eye(params.seq_len)  # attends to itself: not an induction head
    scores = induction_scores(perfect, batch)
    assert scores[0].item() == pytest.approx(1.0)
    assert scores[1].item() == pytest.approx(0.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"vocab_size": 4},
        {"steps": 0},
        {"lr": 0.0},
        {"d_model": 64, "n_heads": 5},
        {"min_segment": 12, "max_segment": 10},
        {"seq_len": 40, "max_segment": 20},
        {"baseline_layers": 0},
        {"steps": "many"},
        {"unknown_parameter": 1},
    ],
)
def test_params_reject_bad_input(bad):
    with pytest.raises(ValidationError):
        InductionParams.model_validate(bad)


def test_defaults_are_the_documented_design():
    params = InductionParams()
    assert (params.vocab_size, params.seq_len, params.d_model, params.n_heads) == (64, 48, 64, 4)
    assert (params.baseline_layers, params.intervention_layers) == (1, 2)


def test_stop_request_interrupts_the_run():
    params = InductionParams.model_validate(InductionHeadsExperiment.presets["tiny"])
    with pytest.raises(StopRequested):
        InductionHeadsExperiment().run(params, LocalContext(stop=True))


def test_example_finding_claims_declared_metrics():
    assert EXAMPLE_FINDING["kind"] in {"theory", "fix", "observation"}
    assert EXAMPLE_FINDING["seeds"] == 3
    assert EXAMPLE_FINDING["title"] and EXAMPLE_FINDING["summary"] and EXAMPLE_FINDING["references"]
    InductionParams.model_validate(EXAMPLE_FINDING["params"])
    for claim in EXAMPLE_FINDING["claims"]:
        assert claim["metric"] in METRICS
        assert claim["direction"] in {"increase", "decrease", "non_inferior"}
        assert 0 < claim.get("min_relative_effect", claim.get("margin")) < 1
        assert claim["statement"]


def test_example_finding_carries_the_ordinary_loss_as_a_labelled_second_experiment():
    main = InductionParams.model_validate(EXAMPLE_FINDING["params"])
    (extra,) = EXAMPLE_FINDING["more_experiments"]
    ordinary = InductionParams.model_validate(extra["params"])
    assert main.train_on_repeat_only and not ordinary.train_on_repeat_only
    assert "ordinary next-token loss" in extra["label"] and "train_on_repeat_only=false" in extra["label"]
    assert "train_on_repeat_only=false" in EXAMPLE_FINDING["summary"]


@pytest.mark.django_db
@pytest.mark.parametrize("preset", [None, "tiny"])
def test_the_example_loader_creates_both_loss_settings(preset):
    """One experiment per training loss (with EXAMPLES_PRESET=tiny, the preset under each experiment's own
    parameters)."""
    from registry.findings.examples import examples_load
    from registry.findings.models import Finding

    examples_load(reproduce=False, preset=preset)
    finding = Finding.objects.get(title=EXAMPLE_FINDING["title"])
    experiments = list(finding.experiments.order_by("id"))
    assert [e.plugin for e in experiments] == ["induction", "induction"]
    assert experiments[0].params.get("train_on_repeat_only", True) is True
    assert experiments[1].params["train_on_repeat_only"] is False
    if preset == "tiny":
        assert experiments[1].params["vocab_size"] == InductionHeadsExperiment.presets["tiny"]["vocab_size"]


def test_the_gpu_preset_uses_the_ordinary_loss():
    gpu = InductionParams.model_validate(InductionHeadsExperiment.presets["gpu"])
    assert not gpu.train_on_repeat_only


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_cuda():
    results, _ = run_locally(InductionHeadsExperiment, preset="tiny", seed=0, device="cuda")
    assert results[INTERVENTION]["induction_score"] > results[BASELINE]["induction_score"]
