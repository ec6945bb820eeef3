"""The grokfast plugin: Grokfast-EMA (Lee et al. 2024) against weight decay alone on the grokking task,
with Nanda et al.'s restricted and excluded losses."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
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
from interp_registry.testing import assert_contract
from pydantic import ValidationError

from plugins.grokfast import EXAMPLE_FINDING, GrokfastExperiment
from plugins.grokfast.experiment import (
    ModularAdditionMLP,
    draw_fourier_frequencies,
    draw_residue_permutation,
    fourier_embedding_init,
    grokfast_ema,
    modular_addition_split,
    progress_measures,
)
from plugins.registry import all_plugins
from registry.reproductions.services import validate_results

METRICS = {metric.name for metric in GrokfastExperiment.metrics}
SEEDS = range(2)


@pytest.fixture(scope="module")
def tiny_runs():
    torch.set_num_threads(1)
    return {seed: run_locally(GrokfastExperiment, preset="tiny", seed=seed) for seed in SEEDS}


def test_contract_and_registration():
    assert_contract(GrokfastExperiment)
    entry = all_plugins()["grokfast"]  # registered through the pyproject entry point
    assert entry.available and entry.experiment is GrokfastExperiment
    assert METRICS == {"steps_to_test_99", "test_accuracy", "restricted_loss", "excluded_loss", "steps_to_train_99"}
    declared = {m.name: (m.axis, m.scale, m.time_to_event, m.higher_is_better) for m in GrokfastExperiment.metrics}
    assert declared == {
        "steps_to_test_99": (Axis.CAPABILITY, Scale.RATIO, True, False),
        "test_accuracy": (Axis.CAPABILITY, Scale.PROPORTION, False, True),
        "restricted_loss": (Axis.SAFETY, Scale.RATIO, False, False),
        "excluded_loss": (Axis.DIAGNOSTIC, Scale.RATIO, False, True),
        "steps_to_train_99": (Axis.DIAGNOSTIC, Scale.RATIO, True, False),
    }
    assert "judgement call" in GrokfastExperiment.metric("restricted_loss").description
    import plugins.grokfast.experiment as module

    assert "why this safety label" in module.__doc__
    assert {"tiny", "gpu"} <= set(GrokfastExperiment.presets)
    for preset in GrokfastExperiment.presets.values():
        GrokfastExperiment.Params.model_validate(preset)
    assert GrokfastExperiment.recommended_seeds == 5


def _assert_every_metric_finite_or_not_reached(results) -> None:
    """Both arms, every declared metric: a finite float, or NotReached at the tiny budget (time to an event)."""
    steps = GrokfastExperiment.presets["tiny"]["steps"]
    assert set(results) == {BASELINE, INTERVENTION}
    for arm in results.values():
        assert set(arm) == METRICS
        for name, value in arm.items():
            if isinstance(value, NotReached):
                assert GrokfastExperiment.metric(name).time_to_event and value == NotReached(budget=float(steps))
            else:
                assert type(value) is float and math.isfinite(value)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_metric_is_a_finite_float_or_not_reached(tiny_runs, seed):
    results, ctx = tiny_runs[seed]
    _assert_every_metric_finite_or_not_reached(results)
    steps = GrokfastExperiment.presets["tiny"]["steps"]
    for arm in results.values():
        assert 0.0 <= arm["test_accuracy"] <= 1.0
        assert arm["restricted_loss"] > 0 and arm["excluded_loss"] > 0
        assert arm["steps_to_train_99"] < steps / 4  # both arms memorise early
    rows = {(row.arm, row.metric): row for row in validate_results(GrokfastExperiment, results)}
    for arm in (BASELINE, INTERVENTION):
        reached = results[arm]["steps_to_test_99"]
        assert rows[arm, "steps_to_test_99"].censored == isinstance(reached, NotReached)
    assert ctx.progress_log[-1][0] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_weight_decay_alone_groks_and_the_progress_measures_see_the_circuit(tiny_runs, seed):
    """The baseline is the grokking recipe: it reaches 99% test accuracy in the tiny budget, and at the end
    its key frequencies alone explain the logits (restricted loss far below chance, ln 31 = 3.4), while
    removing them leaves a poor training fit (excluded loss well above the restricted loss)."""
    results, _ = tiny_runs[seed]
    baseline = results[BASELINE]
    assert not isinstance(baseline["steps_to_test_99"], NotReached)
    assert baseline["test_accuracy"] >= 0.95
    assert baseline["restricted_loss"] < 0.1
    assert baseline["excluded_loss"] > 5 * baseline["restricted_loss"]


@pytest.mark.parametrize("seed", SEEDS)
def test_restricted_loss_falls_before_test_accuracy_moves(tiny_runs, seed):
    """Nanda et al.'s progress-measure claim, on the baseline's curves: the key-frequency circuit explains
    the logits (restricted loss below 0.5 nats) before test accuracy passes 50% (tiny, measured: steps
    250-325 against 450-550)."""
    _, ctx = tiny_runs[seed]
    series = {(row["arm"], row["name"]): row for row in ctx.series}

    def first(name, passes):
        row = series[BASELINE, name]
        return next(step for step, value in zip(row["steps"], row["values"], strict=True) if passes(value))

    assert first("restricted_loss", lambda value: value < 0.5) < first("test_accuracy", lambda value: value > 0.5)


@pytest.mark.xfail(
    strict=True,
    reason="Not reproduced with this MLP, full-batch AdamW and weight decay 1 at the paper's alpha = 0.98, "
    "lambda = 2: Grokfast-EMA generalises later, not sooner (tiny seed 0: baseline 99% at step 1,475, Grokfast "
    "at 1,750 on an AMD EPYC, 1,575 and 1,800 on an Intel Xeon; seed 1: 975 vs 1,175 and 925 vs 1,200; default "
    "parameters: see the docstring). Strict, so a fix shows up.",
)
@pytest.mark.parametrize("seed", SEEDS)
def test_grokfast_generalises_in_fewer_steps(tiny_runs, seed):
    results, _ = tiny_runs[seed]
    grokfast, baseline = results[INTERVENTION]["steps_to_test_99"], results[BASELINE]["steps_to_test_99"]
    assert not isinstance(grokfast, NotReached)
    assert isinstance(baseline, NotReached) or grokfast < baseline


def test_series_and_curves(tiny_runs):
    _, ctx = tiny_runs[0]
    steps = GrokfastExperiment.presets["tiny"]["steps"]
    names = {"train_accuracy", "test_accuracy", "train_loss", "restricted_loss", "excluded_loss"}
    series = {(row["arm"], row["name"]): row for row in ctx.series}
    assert set(series) == {(arm, name) for arm in (BASELINE, INTERVENTION) for name in names}
    for row in series.values():
        assert 2 <= len(row["steps"]) <= 200 and row["steps"][-1] == steps
        assert row["steps"] == sorted(set(row["steps"]))
    # the restricted and excluded losses are logged at the same steps as the accuracies
    assert series[BASELINE, "restricted_loss"]["steps"] == series[BASELINE, "test_accuracy"]["steps"]
    curves = json.loads(ctx.artifacts["curves.json"])
    assert len(curves[BASELINE]["key_frequencies"]) == GrokfastExperiment.presets["tiny"].get("top_k_frequencies", 5)
    assert curves[INTERVENTION]["step"][-1] == steps


def test_same_seed_gives_the_same_results(tiny_runs):
    again, _ = run_locally(GrokfastExperiment, {"steps": 300}, preset="tiny", seed=0)
    twice, _ = run_locally(GrokfastExperiment, {"steps": 300}, preset="tiny", seed=0)
    assert again == twice


def test_split_is_the_grokking_plugins():
    a, b, labels, is_train = modular_addition_split(7, 0.5, seed=3)
    assert torch.equal(labels, (a + b) % 7)
    assert int(is_train.sum()) == round(0.5 * 49)
    assert torch.equal(modular_addition_split(7, 0.5, seed=3)[3], is_train)


def test_progress_measures_on_a_pure_fourier_solution():
    """Logits made only of a key frequency's cos(w (a + b - c)): the restricted logits are the logits
    themselves, and with that frequency excluded only the constant is left (loss ln p)."""
    p = 13
    a, b, labels, is_train = modular_addition_split(p, 0.5, seed=0)
    c = torch.arange(p)
    logits = 4.0 * torch.cos(2 * math.pi * 3 * (labels[:, None] - c[None, :]) / p)
    restricted, excluded = progress_measures(logits, labels, is_train, p, [3])
    assert restricted == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-4)
    assert excluded == pytest.approx(math.log(p), rel=1e-4)
    # a wrong key frequency keeps nothing of it: the restricted loss is chance, the excluded loss the full fit
    restricted, excluded = progress_measures(logits, labels, is_train, p, [5])
    assert restricted == pytest.approx(math.log(p), rel=1e-4)
    assert excluded == pytest.approx(float(F.cross_entropy(logits[is_train], labels[is_train])), rel=1e-4)


def test_grokfast_ema_matches_the_papers_update():
    layer = torch.nn.Linear(2, 1, bias=False)
    grads = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])]
    averages = None
    mu = None
    for g in grads:
        layer.weight.grad = g.clone()
        averages = grokfast_ema(layer, averages, alpha=0.9, lamb=2.0)
        mu = g.clone() if mu is None else mu
        mu = 0.9 * mu + 0.1 * g
        assert torch.allclose(layer.weight.grad, g + 2.0 * mu)


def test_stop_request_raises():
    params = GrokfastExperiment.Params.model_validate(GrokfastExperiment.presets["tiny"])
    with pytest.raises(StopRequested):
        GrokfastExperiment().run(params, LocalContext(seed=0, stop=True))


@pytest.mark.parametrize(
    "bad",
    [
        {"grokfast_alpha": 1.0},
        {"grokfast_alpha": -0.1},
        {"grokfast_lambda": 0.0},
        {"grokfast_lambda": "big"},
        {"modulus": 60},  # not a prime
        {"weight_decay": 0.0},
        {"grokfast_window": 100},  # unknown field (Grokfast-MA is not implemented)
        {"intervention_arm": "grokfast_ma"},  # unknown arm
        {"intervention_arm": "baseline"},
        {"fourier_init_frequencies": 0},
        {"intervention_arm": "fourier_init", "fourier_init_frequencies": 30},  # p = 59 has 29 frequencies
        {"intervention_arm": "fourier_init", "embed_dim": 8},  # 5 frequencies' 10 wave columns do not fit in 8
        {"baseline_arm": "shuffled_fourier"},  # the control of fourier_init only
        {"baseline_arm": "fourier_init", "intervention_arm": "fourier_init"},  # unknown baseline arm
    ],
)
def test_params_validation_rejects(bad):
    with pytest.raises(ValidationError):
        GrokfastExperiment.Params.model_validate(bad)


def test_example_finding_claims_follow_the_scale_rules():
    assert EXAMPLE_FINDING["kind"] in {"theory", "fix", "observation"}
    GrokfastExperiment.Params.model_validate(EXAMPLE_FINDING["params"])
    assert EXAMPLE_FINDING["claims"] and EXAMPLE_FINDING["seeds"] >= GrokfastExperiment.recommended_seeds
    for claim in EXAMPLE_FINDING["claims"]:
        metric = GrokfastExperiment.metric(claim["metric"])
        unit = claim.get("threshold_unit", "relative")
        threshold = claim["margin"] if claim["direction"] == "non_inferior" else claim["min_relative_effect"]
        assert claim["statement"] and 0 < threshold < 1
        assert unit == ("relative" if metric.scale is Scale.RATIO else "absolute")
        if metric.scale is Scale.PROPORTION:
            assert f"{round(threshold * 100)} points" in claim["statement"]


def test_intervention_arm_defaults_to_grokfast():
    params = GrokfastExperiment.Params()
    assert params.intervention_arm == "grokfast" and params.fourier_init_frequencies == 5
    assert GrokfastExperiment.Params(intervention_arm="fourier_init").intervention_arm == "fourier_init"
    GrokfastExperiment.Params(embed_dim=8)  # the grokfast arm does not use the Fourier frequencies


def test_fourier_frequencies_come_from_the_seed_alone():
    drawn = draw_fourier_frequencies(59, 5, seed=3)
    assert drawn == draw_fourier_frequencies(59, 5, seed=3) == sorted(set(drawn))
    assert len(drawn) == 5 and all(1 <= k <= 59 // 2 for k in drawn)
    assert len({tuple(draw_fourier_frequencies(59, 5, seed)) for seed in range(5)}) > 1
    assert draw_fourier_frequencies(31, 15, seed=0) == list(range(1, 16))  # all of them when asked


@pytest.mark.parametrize("modulus, width, count, seed", [(59, 64, 5, 0), (31, 32, 5, 1), (31, 10, 5, 2)])
def test_fourier_embedding_has_the_mechanisms_waves_and_the_default_norm(modulus, width, count, seed):
    """The first 2n columns are exactly cos and sin of 2 pi k x / p at the drawn frequencies (one common
    scale), the other columns are the default initialisation's, and the Frobenius norm is the default's."""
    torch.manual_seed(seed)
    default = ModularAdditionMLP(modulus, width, 8).embed.weight.detach().clone()
    frequencies = draw_fourier_frequencies(modulus, count, seed)
    initialised = fourier_embedding_init(default, frequencies)
    assert initialised.shape == default.shape and initialised.dtype == default.dtype
    assert float(initialised.norm()) == pytest.approx(float(default.norm()), rel=1e-5)
    x = torch.arange(modulus, dtype=torch.float64)
    scale = float(initialised[:, 0].double().norm()) / math.sqrt(modulus)  # sqrt(2) cos has mean square 1
    for j, k in enumerate(frequencies):
        angle = 2 * math.pi * k * x / modulus
        for column, wave in ((2 * j, torch.cos(angle)), (2 * j + 1, torch.sin(angle))):
            expected = (scale * math.sqrt(2) * wave).float()
            assert torch.allclose(initialised[:, column], expected, atol=1e-5)
    rest = slice(2 * count, width)
    assert torch.allclose(initialised[:, rest], scale * default[:, rest], atol=1e-5)
    # the Fourier power sits at the drawn frequencies, as in a grokked embedding
    power = torch.fft.rfft(initialised[:, : 2 * count].double(), dim=0).abs().pow(2).sum(dim=1)[1:]
    assert sorted(int(i) + 1 for i in power.sort(descending=True).indices[:count]) == frequencies
    with pytest.raises(ValueError):
        fourier_embedding_init(default[:, :3], frequencies)


def test_the_fourier_init_run_starts_from_that_embedding_and_keeps_the_baseline():
    """A run too short to move the weights (one step at a learning rate of 1e-9): the intervention's
    embedding has its Fourier power at the seed's drawn frequencies, and the baseline is the same run
    whatever the intervention arm."""
    settings = {"steps": 1, "learning_rate": 1e-9, "eval_every": 1}
    fourier, fourier_ctx = run_locally(
        GrokfastExperiment, {**settings, "intervention_arm": "fourier_init"}, preset="tiny", seed=4
    )
    grokfast, _ = run_locally(GrokfastExperiment, settings, preset="tiny", seed=4)
    keys = json.loads(fourier_ctx.artifacts["curves.json"])[INTERVENTION]["key_frequencies"]
    assert sorted(keys) == draw_fourier_frequencies(31, 5, seed=4)
    assert fourier[BASELINE] == grokfast[BASELINE]


def test_fourier_init_arm_applies_no_grokfast_ema():
    """Grokfast's alpha and lambda change the grokfast arm's run but not the fourier_init arm's."""
    settings = {"steps": 300}
    fourier = [
        run_locally(
            GrokfastExperiment, {**settings, "intervention_arm": "fourier_init", **grokfast}, preset="tiny", seed=0
        )[0]
        for grokfast in ({}, {"grokfast_lambda": 50.0, "grokfast_alpha": 0.5})
    ]
    assert fourier[0] == fourier[1]
    grokfast = [
        run_locally(GrokfastExperiment, {**settings, **grokfast}, preset="tiny", seed=0)[0]
        for grokfast in ({}, {"grokfast_lambda": 50.0, "grokfast_alpha": 0.5})
    ]
    assert grokfast[0][INTERVENTION] != grokfast[1][INTERVENTION]
    assert fourier[0][INTERVENTION] != grokfast[0][INTERVENTION]


def test_fourier_init_arm_gives_every_metric_and_series():
    """The tiny preset with the fourier_init arm, seed 2 (measured: 99% test accuracy at step 625 against the
    baseline's 1,200; other seeds go either way on the tiny preset, so no direction is asserted)."""
    torch.set_num_threads(1)
    results, ctx = run_locally(GrokfastExperiment, {"intervention_arm": "fourier_init"}, preset="tiny", seed=2)
    _assert_every_metric_finite_or_not_reached(results)
    assert results[INTERVENTION]["test_accuracy"] >= 0.95 and results[INTERVENTION]["restricted_loss"] < 0.1
    validate_results(GrokfastExperiment, results)
    names = {"train_accuracy", "test_accuracy", "train_loss", "restricted_loss", "excluded_loss"}
    assert {(row["arm"], row["name"]) for row in ctx.series} == {
        (arm, name) for arm in (BASELINE, INTERVENTION) for name in names
    }
    assert any("Fourier waves at frequencies" in str(line) for line in ctx.logs)


def test_the_fourier_init_finding_is_valid_and_builds_on_the_grokking_theory():
    from plugins.grokfast import FOURIER_INIT_FINDING, MORE_EXAMPLE_FINDINGS
    from plugins.grokking import EXAMPLE_FINDING as GROKKING_FINDING
    from registry.findings.examples import example_specs

    assert MORE_EXAMPLE_FINDINGS == [FOURIER_INIT_FINDING]
    params = GrokfastExperiment.Params.model_validate(FOURIER_INIT_FINDING["params"])
    assert params.intervention_arm == "fourier_init"
    titles = [spec["title"] for spec in example_specs()]
    assert titles.count(FOURIER_INIT_FINDING["title"]) == 1
    # created after the finding it builds on, so the loader can link them
    assert titles.index(GROKKING_FINDING["title"]) < titles.index(FOURIER_INIT_FINDING["title"])


@pytest.mark.django_db
@pytest.mark.parametrize("preset", [None, "tiny"])
def test_the_example_loader_creates_both_grokfast_findings_with_their_own_arm(preset):
    from plugins.grokfast import EXAMPLE_FINDING, FOURIER_INIT_FINDING
    from plugins.grokking import EXAMPLE_FINDING as GROKKING_FINDING
    from registry.findings.examples import examples_load
    from registry.findings.models import Finding

    examples_load(reproduce=False, preset=preset)
    fourier = Finding.objects.get(title=FOURIER_INIT_FINDING["title"])
    grokfast = Finding.objects.get(title=EXAMPLE_FINDING["title"])
    fourier_experiment, control_experiment = fourier.experiments.order_by("id")
    (grokfast_experiment,) = grokfast.experiments.all()
    assert fourier_experiment.plugin == control_experiment.plugin == grokfast_experiment.plugin == "grokfast"
    # the example's own parameters survive the preset: they are what make this finding another intervention
    assert fourier_experiment.params["intervention_arm"] == "fourier_init"
    assert fourier_experiment.params["baseline_arm"] == "default_init"
    assert (control_experiment.params["intervention_arm"], control_experiment.params["baseline_arm"]) == (
        "fourier_init", "shuffled_fourier"
    )
    assert "shuffled" in control_experiment.label
    assert grokfast_experiment.params["intervention_arm"] == "grokfast"
    assert fourier_experiment.default_seeds == control_experiment.default_seeds == 8
    if preset == "tiny":
        tiny = GrokfastExperiment.presets["tiny"]
        assert all(fourier_experiment.params[key] == value for key, value in tiny.items())
    assert list(fourier.builds_on.values_list("title", flat=True)) == [GROKKING_FINDING["title"]]
    assert sorted(fourier.claims.values_list("metric", flat=True)) == ["steps_to_test_99", "test_accuracy"]
    examples_load(reproduce=False, preset=preset)  # idempotent: matched by title
    assert Finding.objects.filter(title=FOURIER_INIT_FINDING["title"]).count() == 1


def test_the_shuffled_control_has_the_same_values_and_norm_but_no_waves_over_the_residues():
    """baseline_arm=shuffled_fourier: row x holds the waves of residue perm[x] (a seed-drawn permutation),
    so the embedding's values, columns' norms and total norm are the fourier_init arm's, but its Fourier
    power over the residues is no longer at the drawn frequencies."""
    torch.manual_seed(0)
    default = ModularAdditionMLP(59, 64, 8).embed.weight.detach().clone()
    frequencies = draw_fourier_frequencies(59, 5, seed=0)
    permutation = draw_residue_permutation(59, seed=0)
    assert permutation == draw_residue_permutation(59, seed=0) and sorted(permutation) == list(range(59))
    assert permutation != list(range(59)) and permutation != draw_residue_permutation(59, seed=1)
    waves = fourier_embedding_init(default, frequencies)
    shuffled = fourier_embedding_init(default, frequencies, permutation)
    assert torch.allclose(shuffled[:, :10], waves[permutation, :10], atol=1e-6)  # the same waves, rows moved
    assert torch.allclose(shuffled[:, 10:], waves[:, 10:])  # the random columns stay where they were
    assert float(shuffled.norm()) == pytest.approx(float(waves.norm()), rel=1e-6)
    power = torch.fft.rfft(shuffled[:, :10].double(), dim=0).abs().pow(2).sum(dim=1)[1:]
    top = sorted(int(i) + 1 for i in power.sort(descending=True).indices[:5])
    assert top != frequencies
    assert float(power[[k - 1 for k in frequencies]].sum() / power.sum()) < 0.5  # waves: all of it
    with pytest.raises(ValueError):
        fourier_embedding_init(default, frequencies, [0] * 59)


def test_the_control_run_differs_from_the_baseline_only_in_its_embedding():
    """A run too short to move the weights: with baseline_arm=shuffled_fourier the baseline starts from
    the shuffled waves (its final key frequencies are not the drawn ones) while the intervention is the
    same fourier_init run as with the default baseline."""
    settings = {"steps": 1, "learning_rate": 1e-9, "eval_every": 1, "intervention_arm": "fourier_init"}
    control, control_ctx = run_locally(
        GrokfastExperiment, {**settings, "baseline_arm": "shuffled_fourier"}, preset="tiny", seed=4
    )
    plain, _ = run_locally(GrokfastExperiment, settings, preset="tiny", seed=4)
    assert control[INTERVENTION] == plain[INTERVENTION]
    assert control[BASELINE] != plain[BASELINE]
    curves = json.loads(control_ctx.artifacts["curves.json"])
    assert sorted(curves[INTERVENTION]["key_frequencies"]) == draw_fourier_frequencies(31, 5, seed=4)
    assert sorted(curves[BASELINE]["key_frequencies"]) != draw_fourier_frequencies(31, 5, seed=4)
    assert any("Fourier waves over shuffled residues" in str(line) for line in control_ctx.logs)


def test_the_shuffled_control_is_never_an_affine_relabelling():
    """x -> a x + b mod p maps a wave at frequency k to one at a k (still a Fourier form): the control
    draws again until its permutation is not affine (p = 5 draws affine ones often)."""
    from plugins.grokfast.experiment import _is_affine

    assert _is_affine([0, 2, 4, 1, 3], 5) and _is_affine(list(range(7)), 7)
    assert not _is_affine([1, 0, 2, 3, 4], 5)
    for seed in range(50):
        assert not _is_affine(draw_residue_permutation(5, seed), 5)
        assert sorted(draw_residue_permutation(5, seed)) == list(range(5))
