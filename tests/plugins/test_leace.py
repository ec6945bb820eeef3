"""The leace plugin (Belrose et al. 2023): the closed-form eraser keeps the paper's guarantee, and
erasing the colour from the shortcut model's hidden layer makes it robust; a random direction does not."""

import math

import pytest
import torch
import torch.nn.functional as F
from interp_registry.sdk import BASELINE, INTERVENTION, Axis, LocalContext, Scale, StopRequested, run_locally
from interp_registry.testing import assert_contract
from pydantic import ValidationError

from plugins.leace import EXAMPLE_FINDING, LeaceExperiment
from plugins.leace.experiment import LeaceParams, fit_leace, fit_logistic
from plugins.registry import all_plugins
from plugins.shift.experiment import flip_colour, hidden, train_shortcut_model, training_sample

METRICS = {metric.name for metric in LeaceExperiment.metrics}


@pytest.fixture(scope="module")
def arms():
    """Every arm on the tiny preset, seeds 0 and 1: {seed: {arm: metrics}}."""
    torch.set_num_threads(1)
    found = {}
    for seed in range(2):
        erm_leace, ctx = run_locally(LeaceExperiment, preset="tiny", seed=seed)
        random_leace, _ = run_locally(LeaceExperiment, {"baseline_arm": "random"}, preset="tiny", seed=seed)
        assert random_leace[INTERVENTION] == erm_leace[INTERVENTION]  # the same eraser whatever the baseline
        found[seed] = {"erm": erm_leace[BASELINE], "leace": erm_leace[INTERVENTION],
                       "random": random_leace[BASELINE], "ctx": ctx}
    return found


@pytest.fixture(scope="module")
def hidden_layer():
    """The tiny ERM model's hidden activations on training samples and their colour flips, with the colour."""
    params = LeaceParams.model_validate(LeaceExperiment.presets["tiny"])
    mlp, data = train_shortcut_model(params, LocalContext(seed=0), torch.device("cpu"), use_irm=False, progress=(0, 1))
    images, _, colours = training_sample(params, data, 1500, torch.Generator().manual_seed(1))
    images, colours = torch.cat([images, flip_colour(images)]), torch.cat([colours, 1 - colours])
    with torch.no_grad():
        return hidden(mlp, images).double(), colours.double()


def _gaussian_problem(seed: int, n: int = 4000, d: int = 12, k: int = 1):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randint(0, 2, (n, k), generator=generator).double()
    mixing = torch.randn(d, d, generator=generator, dtype=torch.float64)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64) @ mixing + 3.0 * z @ torch.randn(
        k, d, generator=generator, dtype=torch.float64
    )
    return x, z


def test_contract_and_registration():
    assert_contract(LeaceExperiment)
    entry = all_plugins()["leace"]
    assert entry.available and entry.experiment is LeaceExperiment
    assert METRICS == {"test_accuracy", "worst_group_accuracy", "train_accuracy", "colour_decodability"}
    assert {m.name: m.axis for m in LeaceExperiment.metrics} == {
        "test_accuracy": Axis.SAFETY, "worst_group_accuracy": Axis.SAFETY,
        "train_accuracy": Axis.CAPABILITY, "colour_decodability": Axis.DIAGNOSTIC,
    }
    assert all(m.scale is Scale.PROPORTION for m in LeaceExperiment.metrics)
    assert {"tiny", "gpu"} <= set(LeaceExperiment.presets)
    import plugins.leace.experiment as module

    assert "Why these safety labels" in module.__doc__ and "arXiv:2306.03819" in module.__doc__


@pytest.mark.parametrize(("seed", "k"), [(0, 1), (1, 1), (2, 3)])
def test_the_guarantee_class_conditional_means_coincide_and_cross_covariance_vanishes(seed, k):
    """Belrose et al., Theorem 3.1: after erasure E[r(X) | Z] is the same for every class (so no linear
    classifier beats a constant one) and Cov(r(X), Z) = 0; the unconditional mean is kept."""
    x, z = _gaussian_problem(seed, k=k)
    erased = fit_leace(x, z)(x)
    centred_z = z - z.mean(0)
    before = (x - x.mean(0)).T @ centred_z / (len(x) - 1)
    after = (erased - erased.mean(0)).T @ centred_z / (len(x) - 1)
    assert before.abs().max() > 1.0
    assert after.abs().max() < 1e-9 * before.abs().max()
    for column in range(k):
        ones, zeros = erased[z[:, column] == 1], erased[z[:, column] == 0]
        assert torch.allclose(ones.mean(0), zeros.mean(0), atol=1e-9)
    assert torch.allclose(erased.mean(0), x.mean(0), atol=1e-9)


def test_the_eraser_is_an_idempotent_map_of_rank_k():
    x, z = _gaussian_problem(3, k=2)
    eraser = fit_leace(x, z)
    identity = torch.eye(x.shape[1], dtype=torch.float64)
    kept = identity - eraser.proj
    assert torch.allclose(kept @ kept, kept, atol=1e-9)  # idempotent: erasing twice = once
    assert torch.linalg.matrix_rank(eraser.proj).item() == 2  # rank k, as the paper states
    erased = eraser(x)
    assert torch.allclose(eraser(erased), erased, atol=1e-9)


def test_a_linear_probe_fitted_after_erasure_is_no_better_than_a_constant(hidden_layer):
    """On the fitting samples (the guarantee's distribution), the best logistic probe is the constant one."""
    activations, colours = hidden_layer
    before = fit_logistic(activations, colours)
    erased = fit_leace(activations, colours)(activations)
    after = fit_logistic(erased, colours)
    with torch.no_grad():
        loss_before = F.binary_cross_entropy_with_logits(before(activations).squeeze(-1), colours)
        loss_after = F.binary_cross_entropy_with_logits(after(erased).squeeze(-1), colours)
        accuracy_after = ((after(erased).squeeze(-1) > 0).double() == colours).double().mean()
    assert loss_before < 0.1  # the colour is linearly obvious before erasure
    assert loss_after == pytest.approx(math.log(2), abs=1e-3)  # a constant predictor's loss (balanced colours)
    assert abs(float(accuracy_after) - 0.5) < 0.02


def test_agrees_with_the_concept_erasure_package(hidden_layer):
    """The reference implementation (EleutherAI's ``concept-erasure``, optional, not a dependency), without
    its shrinkage and trace constraint, gives the same erased representation."""
    import concept_erasure  # a dev dependency: the reference implementation
    for x, z in (_gaussian_problem(5), hidden_layer):
        reference = concept_erasure.LeaceFitter.fit(x, z, shrinkage=False, constrain_cov_trace=False).eraser
        assert torch.allclose(fit_leace(x, z)(x), reference(x), atol=1e-6 * float(x.abs().max()))


def test_random_direction_control_erases_a_random_direction_not_the_concept():
    x, z = _gaussian_problem(4)
    direction = torch.randn(x.shape[1], 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    erased = fit_leace(x, z, direction=direction)(x)
    gap = (erased[z[:, 0] == 1].mean(0) - erased[z[:, 0] == 0].mean(0)).abs().max()
    assert gap > 0.5  # the concept survives
    assert torch.linalg.matrix_rank(fit_leace(x, z, direction=direction).proj).item() == 1


@pytest.mark.parametrize("seed", range(2))
def test_erasing_the_colour_raises_shifted_and_worst_group_accuracy(arms, seed):
    erm, leace = arms[seed]["erm"], arms[seed]["leace"]
    assert erm["test_accuracy"] < 0.2 and erm["worst_group_accuracy"] < 0.05
    assert leace["test_accuracy"] > erm["test_accuracy"] + 0.3
    assert leace["worst_group_accuracy"] > erm["worst_group_accuracy"] + 0.3
    # The in-distribution cost: the colour's share of training accuracy (85% -> about the shape's 75%).
    assert erm["train_accuracy"] - 0.2 < leace["train_accuracy"] < erm["train_accuracy"] - 0.03


@pytest.mark.parametrize("seed", range(2))
def test_random_direction_erasure_leaves_the_shortcut(arms, seed):
    erm, control = arms[seed]["erm"], arms[seed]["random"]
    assert control["test_accuracy"] < 0.3
    assert abs(control["train_accuracy"] - erm["train_accuracy"]) < 0.03


def test_colour_stays_decodable_out_of_sample(arms):
    """Measured, not the paper's claim: on fresh samples a linear probe still reads the colour (near-degenerate
    directions of the ReLU layer's covariance), although the guarantee holds exactly on the fitting samples."""
    for seed in arms:
        assert arms[seed]["erm"]["colour_decodability"] > 0.95
        assert 0.0 <= arms[seed]["leace"]["colour_decodability"] <= 1.0


def test_every_value_is_a_finite_proportion_and_progress_ends(arms):
    for seed in arms:
        for arm in ("erm", "leace", "random"):
            values = arms[seed][arm]
            assert set(values) == METRICS
            assert all(type(v) is float and math.isfinite(v) and 0.0 <= v <= 1.0 for v in values.values())
    assert arms[0]["ctx"].progress_log[-1][0] == pytest.approx(1.0)


def test_training_curve_is_logged_for_both_arms(arms):
    """Series: the ERM model's training nll (the shortcut plugin's steps) for both arms, which read the
    same model; it falls."""
    tiny = LeaceExperiment.presets["tiny"]
    curves = {(s["arm"], s["name"]): s for s in arms[0]["ctx"].series}
    assert set(curves) == {(BASELINE, "nll"), (INTERVENTION, "nll")}
    nll = curves[(BASELINE, "nll")]
    assert curves[(INTERVENTION, "nll")]["values"] == nll["values"]
    assert nll["steps"][0] == 0 and nll["steps"][-1] == tiny["steps"] - 1 and len(nll["steps"]) <= 30
    assert nll["values"][-1] < 0.75 * nll["values"][0]  # measured: 0.72 -> 0.35


def test_retrained_head_and_training_fit_run():
    results, ctx = run_locally(
        LeaceExperiment, {"retrain_head": True, "fit_on": "training", "steps": 60}, preset="tiny", seed=0
    )
    assert set(results) == {BASELINE, INTERVENTION}
    assert results[INTERVENTION]["test_accuracy"] > results[BASELINE]["test_accuracy"]


def test_stop_request_raises():
    params = LeaceExperiment.Params.model_validate(LeaceExperiment.presets["tiny"])
    with pytest.raises(StopRequested):
        LeaceExperiment().run(params, LocalContext(seed=0, stop=True))


@pytest.mark.parametrize(
    "bad",
    [
        {"baseline_arm": "leace"},
        {"intervention_arm": "erm"},
        {"baseline_arm": "random", "intervention_arm": "random"},
        {"fit_on": "test"},
        {"fit_samples": 0},
        {"shrinkage": True},  # unknown field
    ],
)
def test_params_validation_rejects(bad):
    with pytest.raises(ValidationError):
        LeaceExperiment.Params.model_validate(bad)


def test_example_finding_is_valid_and_claims_follow_the_scale_rules():
    assert EXAMPLE_FINDING["kind"] == "fix"
    LeaceExperiment.Params.model_validate(EXAMPLE_FINDING["params"])
    for extra in EXAMPLE_FINDING["more_experiments"]:
        LeaceExperiment.Params.model_validate(extra["params"])
    for claim in EXAMPLE_FINDING["claims"]:
        metric = LeaceExperiment.metric(claim["metric"])
        assert metric.scale is Scale.PROPORTION and claim["threshold_unit"] == "absolute"
        assert 0 < claim["min_relative_effect"] < 1
        assert f"{round(claim['min_relative_effect'] * 100)} points" in claim["statement"]


@pytest.mark.django_db
@pytest.mark.parametrize("preset", [None, "tiny"])
def test_the_example_loader_creates_the_finding_with_its_control_experiment(preset):
    """The embedded default's loader (registry/findings/examples.py) picks the example up from the plugin
    package: one experiment against ERM, one against the random control, and the pre-registered claims."""
    from registry.findings.examples import examples_load
    from registry.findings.models import Finding

    examples_load(reproduce=False, preset=preset)
    finding = Finding.objects.get(title=EXAMPLE_FINDING["title"])
    experiments = list(finding.experiments.order_by("id"))
    assert [(e.plugin, e.params.get("baseline_arm", "erm")) for e in experiments] == [
        ("leace", "erm"), ("leace", "random")
    ]
    assert all(e.default_seeds == 5 for e in experiments)
    assert not any(e.reproductions.exists() for e in experiments)  # reproduce=False queues nothing
    assert sorted(c.metric for c in finding.claims.all()) == sorted(c["metric"] for c in EXAMPLE_FINDING["claims"])
    assert finding.claims.count() == 3
    if preset == "tiny":
        for experiment in experiments:
            assert experiment.params["hidden_dim"] == LeaceExperiment.presets["tiny"]["hidden_dim"]
