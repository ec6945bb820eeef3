"""Effects v2 through the real computation (``finding_effects_recompute``): experiments never
pooled, retraction, the six statuses, censored time-to-event claims, scale-native scores."""

from __future__ import annotations

import math

import pytest
from django.utils import timezone

from plugins.registry import register_temporarily
from registry.findings.models import Claim
from registry.reproductions.models import Experiment, Measurement, Reproduction, Run
from tests.effects.builders import (
    RISK_DOWN,
    SKILL_UP,
    claim,
    claim_entry,
    echo_params,
    experiment_for,
    metric_entries,
    recompute,
    reproduction,
)
from tests.factories import FindingFactory
from tests.fakes.plugins import TimedExperiment

pytestmark = pytest.mark.django_db

NOISY_NULL = [(1.0, 1.02), (1.1, 1.08), (0.9, 0.91)]


@pytest.fixture
def finding(user):
    return FindingFactory(created_by=user, kind="fix")


@pytest.fixture
def timed():
    with register_temporarily(TimedExperiment):
        yield


def _timed_runs(experiment: Experiment, rows: list[dict[str, tuple[float, bool, float, bool]]]) -> None:
    """rows[i][metric] = (baseline, baseline_censored, intervention, intervention_censored)."""
    repro = Reproduction.objects.create(
        experiment=experiment, requested_by=experiment.finding.created_by, seeds=list(range(len(rows)))
    )
    for seed, metrics in enumerate(rows):
        run = Run.objects.create(reproduction=repro, seed=seed, state=Run.State.SUCCEEDED, hardware="cpu")
        for metric, (b, b_cens, a, a_cens) in metrics.items():
            Measurement.objects.create(run=run, arm="baseline", metric=metric, value=b, censored=b_cens)
            Measurement.objects.create(run=run, arm="intervention", metric=metric, value=a, censored=a_cens)


def test_experiments_with_other_parameters_are_never_pooled(finding):
    c = claim(finding, "risk", "decrease", min_relative_effect=0.3)
    real = experiment_for(finding)
    smoke = experiment_for(finding, params={**echo_params(), "effect": 0.0})
    reproduction(real, {"risk": RISK_DOWN})
    reproduction(smoke, {"risk": NOISY_NULL})
    data = recompute(finding)
    by_experiment = {m["experiment"]: m for m in metric_entries(data, "risk")}
    assert set(by_experiment) == {real.pk, smoke.pk}
    assert by_experiment[real.pk]["effect"]["n"] == 5 and by_experiment[smoke.pk]["effect"]["n"] == 3
    entry = claim_entry(data, c)
    verdicts = {e["experiment"]: e["verdict"] for e in entry["experiments"]}
    # The smoke test is decided on its own (refuted: no change), not averaged into the real one.
    assert verdicts == {real.pk: "confirmed", smoke.pk: "refuted"}
    assert entry["experiments_disagree"] is True and entry["verdict"] == "inconclusive"
    assert data["claims_tests"] == 2  # Bonferroni across (claim, experiment) tests
    assert finding.status == "contested"


def test_a_retracted_experiment_is_excluded_and_listed(finding, user):
    c = claim(finding, "risk", "decrease", min_relative_effect=0.3)
    real = experiment_for(finding)
    smoke = experiment_for(finding, params={**echo_params(), "effect": 0.0})
    reproduction(real, {"risk": RISK_DOWN})
    reproduction(smoke, {"risk": NOISY_NULL})
    Experiment.objects.filter(pk=smoke.pk).update(retracted_at=timezone.now(), retraction_reason="20-step smoke test")
    data = recompute(finding)
    assert {m["experiment"] for m in data["metrics"]} == {real.pk}
    assert data["retracted_experiments"] == [smoke.pk]
    assert claim_entry(data, c)["verdict"] == "confirmed"
    assert finding.status == "reproduced"


def test_some_confirmed_others_undecided_is_partially_reproduced(finding):
    confirmed = claim(finding, "risk", "decrease", min_relative_effect=0.3)
    undecided = claim(finding, "skill", "increase", min_relative_effect=0.45)  # about +48%: not clear of 45%
    reproduction(experiment_for(finding), {"risk": RISK_DOWN, "skill": SKILL_UP})
    data = recompute(finding)
    assert claim_entry(data, confirmed)["verdict"] == "confirmed"
    assert claim_entry(data, undecided)["verdict"] == "inconclusive"
    assert finding.status == "partially_reproduced"


def test_no_runs_is_unreproduced_and_fewer_than_min_seeds_decides_nothing(finding):
    c = claim(finding, "risk", "decrease", min_relative_effect=0.3)
    assert recompute(finding)["status"] == "unreproduced"
    reproduction(experiment_for(finding), {"risk": RISK_DOWN[:2]})  # 2 seeds, a huge clean effect
    data = recompute(finding)
    entry = claim_entry(data, c)
    assert entry["verdict"] == "inconclusive"
    assert any("at least 3" in (e["reason"] or "") for e in entry["experiments"])
    assert finding.status == "undecided"


def test_identical_differences_are_deterministic_not_p_zero(finding):
    c = claim(finding, "risk", "decrease", min_relative_effect=0.3)
    halved = [(1.0, 0.5), (2.0, 1.0), (4.0, 2.0), (0.5, 0.25), (3.0, 1.5), (8.0, 4.0)]  # ratio 0.5 each seed
    experiment = experiment_for(finding)
    reproduction(experiment, {"risk": halved[:3]})
    data = recompute(finding)
    effect = metric_entries(data, "risk")[0]["effect"]
    assert effect["deterministic"] is True and effect["p_value"] is None
    assert effect["relative_change"] == pytest.approx(-0.5)
    # No spread: the exact sign test decides, and 3 identical seeds (p = 1/8) are not enough.
    entry = claim_entry(data, c)
    assert entry["verdict"] == "inconclusive" and "at least 6" in entry["experiments"][0]["reason"]
    reproduction(experiment, {"risk": halved[3:]}, seeds=[3, 4, 5])
    assert claim_entry(recompute(finding), c)["verdict"] == "confirmed"


def test_ratio_effects_never_pass_minus_100_percent(finding):
    claim(finding, "risk", "decrease", min_relative_effect=0.9)
    # The README's checkerboard case: -99.5% .. -99.7% per seed, noisy baselines.
    reproduction(experiment_for(finding), {"risk": [(0.30, 0.0015), (0.18, 0.0005), (0.42, 0.0013)]})
    data = recompute(finding)
    effect = metric_entries(data, "risk")[0]["effect"]
    assert -1.0 < effect["relative_ci_low"] <= effect["relative_change"] <= effect["relative_ci_high"] < -0.99
    assert data["claims"][0]["verdict"] == "confirmed"


def test_scores_are_log_units_and_do_not_grow_with_seeds(finding, user):
    reproduction(experiment_for(finding), {"risk": RISK_DOWN, "skill": SKILL_UP})
    five = recompute(finding)["axis_scores"]
    other = FindingFactory(created_by=user, kind="fix")
    doubled = [*RISK_DOWN, *RISK_DOWN]
    reproduction(experiment_for(other), {"risk": doubled, "skill": [*SKILL_UP, *SKILL_UP]})
    ten = recompute(other)["axis_scores"]
    expected = sum(-math.log(a / b) for b, a in RISK_DOWN) / len(RISK_DOWN)  # risk is lower-is-better
    assert five["safety"]["score"] == pytest.approx(expected)
    assert ten["safety"]["score"] == pytest.approx(five["safety"]["score"])
    assert ten["safety"]["ci_high"] - ten["safety"]["ci_low"] < five["safety"]["ci_high"] - five["safety"]["ci_low"]
    assert five["safety"]["unit"] == "log" and five["safety"]["experiment"] is not None


def test_censored_time_to_event_claim_uses_bounds_not_the_budget(finding, timed):
    experiment = experiment_for(finding, plugin="timed", params={})
    c = claim(finding, "steps_to_goal", "decrease", min_relative_effect=0.3)
    # Baseline never reaches the goal within 1000 steps; the intervention does at 300-420.
    _timed_runs(
        experiment,
        [{"steps_to_goal": (1000.0, True, s, False), "loss": (1.0, False, 0.8, False)} for s in (300, 420, 350, 380)],
    )
    data = recompute(finding)
    effect = metric_entries(data, "steps_to_goal")[0]["effect"]
    assert effect["censored"]["reached_baseline"] == 0 and effect["censored"]["reached_intervention"] == 4
    assert effect["censored"]["bound"] == "upper"
    assert effect["relative_change"] is None and effect["baseline_mean"] is None  # never averaged
    assert effect["relative_ci_low"] is None and effect["relative_ci_high"] < -0.3
    assert claim_entry(data, c)["verdict"] == "confirmed"
    # An increase claim cannot be refuted or confirmed from an upper bound's wrong side.
    Claim.objects.filter(pk=c.pk).update(direction="increase", min_relative_effect=0.0)
    assert claim_entry(recompute(finding), c)["verdict"] in {"refuted", "inconclusive"}


def test_both_arms_censored_decides_nothing(finding, timed):
    experiment = experiment_for(finding, plugin="timed", params={})
    c = claim(finding, "steps_to_goal", "decrease", min_relative_effect=0.3)
    _timed_runs(experiment, [{"steps_to_goal": (1000.0, True, 1000.0, True)} for _ in range(4)])
    entry = claim_entry(recompute(finding), c)
    assert entry["verdict"] == "inconclusive"
    assert entry["effect"]["censored"]["bound"] == "none"
