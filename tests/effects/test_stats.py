"""Tests for registry.effects.stats (pure statistics; no Django needed).

Known values come from scipy or are computed by hand in the comments.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from registry.effects.stats import (
    AxisMetric,
    AxisScore,
    EffectEstimate,
    absolute_claim_problem,
    axis_score,
    capabilities_correlation,
    claim_verdict,
    corrected_confidence,
    correlation_with_interval,
    differential_progress,
    heterogeneity,
    holm_bonferroni,
    lean_flag,
    mde_warning,
    minimum_detectable_effect,
    paired_effect,
    relative_claim_problem,
)

T975_2 = 4.302652729911275  # t_{0.975, 2}


def verdict(estimate: EffectEstimate, direction: str, threshold: float, unit: str = "relative", hib: bool = True, **kw):
    return claim_verdict(
        estimate, direction=direction, threshold=threshold, threshold_unit=unit, higher_is_better=hib, **kw
    )


def with_interval(estimate: EffectEstimate, low: float | None, high: float | None, **changes) -> EffectEstimate:
    """An estimate with a chosen effect interval (and matching relative interval)."""
    rel = {}
    if estimate.relative_change is not None:
        rel = {
            "relative_ci_low": None if low is None else math.expm1(low),
            "relative_ci_high": None if high is None else math.expm1(high),
        }
    return dataclasses.replace(estimate, effect_ci_low=low, effect_ci_high=high, **rel, **changes)


RATIO5 = paired_effect([1.0, 1.1, 0.9, 1.0, 1.2], [2.0, 2.1, 1.7, 2.2, 2.3], scale="ratio")
POINTS5 = paired_effect([0.5, 0.6, 0.55, 0.5, 0.52], [0.8, 0.85, 0.9, 0.8, 0.83], scale="proportion")
DIFF5 = paired_effect([0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 2.5, 2.0, 4.0, 5.5], scale="difference")


# --------------------------------------------------------------------------- paired_effect: ratio


def test_ratio_interval_is_exp_of_scipy_t_interval_on_log_ratios() -> None:
    rng = np.random.default_rng(1)
    b = rng.lognormal(0.0, 0.3, size=6)
    a = b * rng.lognormal(-0.5, 0.2, size=6)
    e = paired_effect(b, a, scale="ratio")
    logs = np.log(a / b)
    res = sps.ttest_1samp(logs, 0.0)
    ci = res.confidence_interval(0.95)
    assert e.effect_unit == "log_ratio" and e.scale == "ratio"
    assert e.effect == pytest.approx(logs.mean())
    assert (e.effect_ci_low, e.effect_ci_high) == pytest.approx((ci.low, ci.high))
    assert e.relative_change == pytest.approx(math.exp(logs.mean()) - 1)
    assert (e.relative_ci_low, e.relative_ci_high) == pytest.approx((math.expm1(ci.low), math.expm1(ci.high)))
    assert e.p_value == pytest.approx(res.pvalue)
    assert e.sd == pytest.approx(np.std(logs, ddof=1))
    assert e.mean_difference == pytest.approx(np.mean(a - b))
    assert e.baseline_mean == pytest.approx(b.mean()) and e.intervention_mean == pytest.approx(a.mean())
    assert not e.deterministic and e.censored is None and e.warnings == ()


def test_readme_checkerboard_claim_is_confirmed_at_three_seeds() -> None:
    # energies fall ~99.6 % on every seed: the old additive interval read "-100% (-128% to -71%)"
    e = paired_effect([0.30, 0.28, 0.33], [0.0011, 0.0009, 0.0014], scale="ratio")
    assert -1.0 < e.relative_ci_low < e.relative_change < e.relative_ci_high < -0.99
    assert verdict(e, "decrease", 0.9, hib=False) == ("confirmed", None)
    assert verdict(e, "increase", 0.0, hib=False)[0] == "refuted"


def test_ratio_relative_change_never_below_minus_100_percent() -> None:
    e = paired_effect([1.0, 1.0, 1.0], [1e-3, 0.5, 1e-6], scale="ratio")  # hugely variable drop
    assert e.relative_ci_low > -1.0 and e.relative_ci_high > e.relative_ci_low


def test_ratio_rejects_non_positive_values() -> None:
    with pytest.raises(ValueError, match="strictly positive"):
        paired_effect([1.0, 2.0], [0.0, 1.0], scale="ratio")
    with pytest.raises(ValueError, match="strictly positive"):
        paired_effect([-1.0, 2.0], [1.0, 1.0], scale="ratio")


# --------------------------------------------------------------------------- proportion and difference


def test_proportion_points_interval_matches_scipy_and_relative_as_ratio_case() -> None:
    b = np.array([0.5, 0.6, 0.55, 0.5, 0.52])
    a = np.array([0.8, 0.85, 0.9, 0.8, 0.83])
    res = sps.ttest_rel(a, b)
    ci = res.confidence_interval(0.95)
    e = POINTS5
    assert e.effect_unit == "points"
    assert e.effect == pytest.approx(np.mean(a - b))
    assert (e.effect_ci_low, e.effect_ci_high) == pytest.approx((ci.low, ci.high))
    assert e.p_value == pytest.approx(res.pvalue)
    logs = np.log(a / b)
    lci = sps.ttest_1samp(logs, 0.0).confidence_interval(0.95)
    assert e.relative_change == pytest.approx(math.expm1(logs.mean()))
    assert (e.relative_ci_low, e.relative_ci_high) == pytest.approx((math.expm1(lci.low), math.expm1(lci.high)))


def test_proportion_interval_clipped_to_feasible_range() -> None:
    e = paired_effect([0.0, 0.0, 0.0], [1.0, 0.9, 0.2], scale="proportion")
    # mean 0.7, sd 0.4359, half-width 4.3027 * 0.4359 / sqrt(3) = 1.083 -> [-0.383, 1.783] -> high clipped
    assert e.effect_ci_high == 1.0
    assert e.effect_ci_low == pytest.approx(0.7 - T975_2 * np.std([1.0, 0.9, 0.2], ddof=1) / math.sqrt(3))


def test_proportion_near_zero_baseline_has_no_relative_change() -> None:
    e = paired_effect([0.10, 0.04, 0.12], [0.74, 0.75, 0.73], scale="proportion")
    assert e.relative_change is None and e.relative_ci_low is None and e.relative_ci_high is None
    assert any("0.05" in w and "points" in w for w in e.warnings)
    assert e.effect == pytest.approx(np.mean([0.64, 0.71, 0.61]))


def test_proportion_rejects_values_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        paired_effect([0.5, 0.5], [1.2, 0.5], scale="proportion")


def test_difference_scale_matches_ttest_rel_and_has_no_relative() -> None:
    b, a = [0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 2.5, 2.0, 4.0, 5.5]
    res = sps.ttest_rel(a, b)
    ci = res.confidence_interval(0.95)
    e = DIFF5
    assert e.effect_unit == "difference"
    assert e.effect == pytest.approx(1.0) and e.mean_difference == pytest.approx(1.0)
    assert (e.effect_ci_low, e.effect_ci_high) == pytest.approx((ci.low, ci.high))
    assert e.p_value == pytest.approx(res.pvalue)
    assert e.relative_change is None and e.relative_ci_low is None


def test_hand_computed_difference_case() -> None:
    # diffs [1, 2, 3]: mean 2, sd 1, half-width t_{0.975,2} / sqrt(3); t = 2 sqrt(3) -> p = 1 - sqrt(6/7)
    e = paired_effect([10, 10, 10], [11, 12, 13], scale="difference")
    assert (e.effect_ci_low, e.effect_ci_high) == pytest.approx((2 - T975_2 / math.sqrt(3), 2 + T975_2 / math.sqrt(3)))
    assert e.p_value == pytest.approx(1 - math.sqrt(6 / 7))


def test_scale_accepts_str_enum() -> None:
    from enum import StrEnum

    class Scale(StrEnum):
        RATIO = "ratio"

    assert paired_effect([1, 2], [2, 3], scale=Scale.RATIO).scale == "ratio"
    with pytest.raises(ValueError, match="scale"):
        paired_effect([1, 2], [2, 3], scale="log")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- zero variance, small n


@pytest.mark.parametrize(
    ("scale", "b", "a", "effect"),
    [
        ("difference", [1.0, 2.0, 3.0], [2.0, 3.0, 4.0], 1.0),
        ("ratio", [1.0, 2.0, 4.0], [2.0, 4.0, 8.0], math.log(2.0)),
        ("proportion", [0.1, 0.2, 0.3], [0.2, 0.3, 0.4], 0.1),
        ("difference", [1.0, 1.0], [1.0, 1.0], 0.0),
    ],
)
def test_zero_variance_is_deterministic_not_p_zero(scale: str, b: list, a: list, effect: float) -> None:
    e = paired_effect(b, a, scale=scale)
    assert e.deterministic and e.p_value is None and e.sd == 0.0
    assert e.effect == pytest.approx(effect)
    assert e.effect_ci_low == e.effect_ci_high == e.effect
    assert any("deterministic" in w for w in e.warnings)


def test_zero_variance_two_seeds_gets_no_verdict_below_min_seeds() -> None:
    e = paired_effect([1.0, 1.0], [0.5, 0.5], scale="ratio")
    assert e.deterministic
    v, reason = verdict(e, "decrease", 0.1, hib=False)
    assert v == "inconclusive" and "at least 3" in reason


def test_single_seed_has_no_interval() -> None:
    e = paired_effect([1.0], [2.0], scale="ratio")
    assert e.n == 1 and e.sd is None and e.effect_ci_low is None and e.p_value is None
    assert e.relative_change == pytest.approx(1.0) and e.relative_ci_low is None
    assert any("fewer than 2 seeds" in w for w in e.warnings)
    assert verdict(e, "increase", 0.1, min_seeds=1) == ("inconclusive", "fewer than 2 seeds: no confidence interval")


@pytest.mark.parametrize(
    ("baseline", "intervention", "kwargs", "match"),
    [
        ([1, 2], [1], {}, "equal lengths"),
        ([], [], {}, "at least one seed"),
        ([1, float("nan")], [1, 2], {}, "finite"),
        ([1, 2], [1, 2], {"confidence": 1.0}, "confidence"),
        ([1, 2], [1, 2], {"baseline_censored": [True]}, "one flag per seed"),
    ],
)
def test_paired_effect_validation(baseline: list, intervention: list, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        paired_effect(baseline, intervention, scale="ratio", **kwargs)


def test_censoring_only_on_ratio_scale() -> None:
    with pytest.raises(ValueError, match="ratio scale"):
        paired_effect([1, 2], [1, 2], scale="difference", baseline_censored=[False, True])


def test_to_dict_is_json_safe() -> None:
    for e in (RATIO5, POINTS5, DIFF5, paired_effect([1.0], [2.0], scale="ratio")):
        d = e.to_dict()
        json.dumps(d, allow_nan=False)
        assert list(d) == [
            "n", "scale", "baseline_mean", "intervention_mean", "mean_difference", "effect", "effect_ci_low",
            "effect_ci_high", "effect_unit", "sd", "relative_change", "relative_ci_low", "relative_ci_high",
            "p_value", "deterministic", "censored", "confidence", "warnings",
        ]  # fmt: skip


# --------------------------------------------------------------------------- censoring


def test_censored_upper_bound_when_only_baseline_censored() -> None:
    # budget 1000; baseline seeds 3, 4 never reached the event, the intervention reached it everywhere
    b = [800.0, 900.0, 1000.0, 1000.0, 700.0]
    a = [200.0, 300.0, 250.0, 1000.0, 900.0]
    e = paired_effect(b, a, scale="ratio", baseline_censored=[False, False, True, True, False])
    c = e.censored
    assert c is not None and c["bound"] == "upper" and e.bound == "upper"
    assert (c["reached_baseline"], c["reached_intervention"], c["n"]) == (3, 5, 5)
    # earlier: seeds 0, 1 (exact), 2 (250 < budget); later: seed 4 (exact); seed 3 (1000 vs >= 1000) undecidable
    assert (c["earlier"], c["later"], c["undecidable"]) == (3, 1, 1)
    assert c["sign_test_p"] == pytest.approx(sps.binomtest(3, 4, 0.5).pvalue) == pytest.approx(0.625)
    assert e.p_value == c["sign_test_p"]
    # only the upper side survives, equal to the t bound on the recorded log ratios
    logs = np.log(np.array(a) / np.array(b))
    ci = sps.ttest_1samp(logs, 0.0).confidence_interval(0.95)
    assert e.effect_ci_low is None and e.relative_ci_low is None
    assert e.effect_ci_high == pytest.approx(ci.high)
    assert e.relative_ci_high == pytest.approx(math.expm1(ci.high))
    assert any("upper end" in w for w in e.warnings)


def test_censored_lower_bound_none_and_exact() -> None:
    b = [100.0, 200.0, 300.0]
    a = [400.0, 500.0, 500.0]
    lower = paired_effect(b, a, scale="ratio", intervention_censored=[False, True, True])
    assert lower.censored["bound"] == "lower" and lower.effect_ci_high is None and lower.effect_ci_low is not None
    assert (lower.censored["earlier"], lower.censored["later"]) == (0, 3)
    both_kinds = paired_effect(
        b, a, scale="ratio", baseline_censored=[True, False, False], intervention_censored=[False, True, False]
    )
    assert both_kinds.censored["bound"] == "none"
    assert both_kinds.effect_ci_low is None and both_kinds.effect_ci_high is None
    unknown = paired_effect(
        b, a, scale="ratio", baseline_censored=[True, False, False], intervention_censored=[True, False, False]
    )
    assert unknown.censored["bound"] == "none" and unknown.censored["undecidable"] == 1
    exact = paired_effect(b, a, scale="ratio", baseline_censored=[False] * 3, intervention_censored=[False] * 3)
    plain = paired_effect(b, a, scale="ratio")
    assert exact.censored["bound"] == "exact"
    assert (exact.effect_ci_low, exact.effect_ci_high, exact.p_value) == (
        plain.effect_ci_low,
        plain.effect_ci_high,
        plain.p_value,
    )


def test_censored_verdicts_use_only_the_valid_side() -> None:
    # intervention reaches the event 4-5x earlier; two baseline seeds hit the budget (upper bound)
    b = [1000.0, 1000.0, 900.0, 950.0, 1000.0]
    a = [200.0, 210.0, 190.0, 220.0, 230.0]
    e = paired_effect(b, a, scale="ratio", baseline_censored=[True, True, False, False, True])
    assert e.bound == "upper"
    assert verdict(e, "decrease", 0.5, hib=False) == ("confirmed", None)  # needs only the upper side
    assert verdict(e, "increase", 0.1, hib=False)[0] == "refuted"  # refuting an increase: upper side
    v, reason = verdict(e, "decrease", 0.9, hib=False)  # would need the lower side to refute
    assert v == "inconclusive" and "censored" in reason
    # symmetric: intervention censored gives a lower bound: an increase can be confirmed, never refuted
    up = paired_effect(a, b, scale="ratio", intervention_censored=[True, True, False, False, True])
    assert up.bound == "lower"
    assert verdict(up, "increase", 1.0) == ("confirmed", None)
    v, reason = verdict(up, "increase", 20.0)
    assert v == "inconclusive" and "censored" in reason
    none = paired_effect(b, a, scale="ratio", baseline_censored=[True] * 5, intervention_censored=[True] + [False] * 4)
    v, reason = verdict(none, "decrease", 0.5, hib=False)
    assert none.bound == "none" and v == "inconclusive" and "no side" in reason


# --------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    ("low", "high", "direction", "r", "hib", "expected"),
    [
        # relative increase r = 0.5: T = ln 1.5 = 0.405
        (0.41, 0.9, "increase", 0.5, True, "confirmed"),
        (0.40, 0.9, "increase", 0.5, True, "inconclusive"),
        (-0.2, 0.40, "increase", 0.5, True, "refuted"),
        (math.log(1.5), 0.9, "increase", 0.5, True, "inconclusive"),  # strict
        # relative decrease r = 0.9: T = ln 0.1 = -2.303
        (-3.0, -2.31, "decrease", 0.9, False, "confirmed"),
        (-3.0, -2.29, "decrease", 0.9, False, "inconclusive"),
        (-2.29, -1.0, "decrease", 0.9, False, "refuted"),
        # non-inferior margin 0.1, higher is better: T = ln 0.9 = -0.105
        (-0.1, 0.2, "non_inferior", 0.1, True, "confirmed"),
        (-0.2, 0.2, "non_inferior", 0.1, True, "inconclusive"),
        (-0.5, -0.11, "non_inferior", 0.1, True, "refuted"),
        # non-inferior margin 0.1, lower is better: T = ln 1.1 = 0.0953
        (-0.2, 0.09, "non_inferior", 0.1, False, "confirmed"),
        (-0.2, 0.2, "non_inferior", 0.1, False, "inconclusive"),
        (0.1, 0.3, "non_inferior", 0.1, False, "refuted"),
    ],
)
def test_relative_thresholds_on_log_scale(
    low: float, high: float, direction: str, r: float, hib: bool, expected: str
) -> None:
    v, reason = verdict(with_interval(RATIO5, low, high), direction, r, hib=hib)
    assert v == expected
    assert (reason is None) == (expected != "inconclusive")


@pytest.mark.parametrize(
    ("low", "high", "direction", "r", "hib", "expected"),
    [
        (0.31, 0.5, "increase", 0.3, True, "confirmed"),
        (0.29, 0.5, "increase", 0.3, True, "inconclusive"),
        (0.0, 0.29, "increase", 0.3, True, "refuted"),
        (-0.5, -0.31, "decrease", 0.3, True, "confirmed"),
        (-0.29, 0.0, "decrease", 0.3, True, "refuted"),
        (-0.04, 0.1, "non_inferior", 0.05, True, "confirmed"),
        (-0.2, -0.06, "non_inferior", 0.05, True, "refuted"),
        (-0.1, 0.04, "non_inferior", 0.05, False, "confirmed"),
        (0.06, 0.2, "non_inferior", 0.05, False, "refuted"),
    ],
)
def test_absolute_thresholds_on_difference_interval(
    low: float, high: float, direction: str, r: float, hib: bool, expected: str
) -> None:
    for base in (POINTS5, DIFF5):
        assert verdict(with_interval(base, low, high), direction, r, "absolute", hib)[0] == expected


def test_zero_effect_never_confirmed() -> None:
    zero = paired_effect([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], scale="ratio")
    for direction in ("increase", "decrease"):
        assert verdict(zero, direction, 0.0)[0] != "confirmed"
    zero_diff = paired_effect([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], scale="difference")
    assert verdict(zero_diff, "increase", 0.0, "absolute")[0] != "confirmed"
    assert verdict(zero_diff, "non_inferior", 0.0, "absolute")[0] != "confirmed"


def test_min_seeds() -> None:
    e = paired_effect([1.0, 1.1], [3.0, 3.2], scale="ratio")
    v, reason = verdict(e, "increase", 0.5)
    assert v == "inconclusive" and "only 2 seed(s)" in reason and "at least 3" in reason
    assert verdict(e, "increase", 0.5, min_seeds=2)[0] == "confirmed"


def test_invalid_and_unsupported_claims_are_inconclusive_with_reason() -> None:
    v, reason = verdict(RATIO5, "decrease", 1.0, hib=False)
    assert v == "inconclusive" and reason.startswith("invalid claim")
    v, reason = verdict(RATIO5, "non_inferior", 1.2, hib=True)
    assert v == "inconclusive" and reason.startswith("invalid claim")
    v, reason = verdict(RATIO5, "increase", -0.1)
    assert v == "inconclusive" and reason.startswith("invalid claim")
    v, reason = verdict(DIFF5, "increase", 0.1, "relative")
    assert v == "inconclusive" and "absolute" in reason
    v, reason = verdict(RATIO5, "increase", 0.1, "absolute")
    assert v == "inconclusive" and "relative" in reason
    low_base = paired_effect([0.01, 0.02, 0.03], [0.5, 0.6, 0.7], scale="proportion")
    v, reason = verdict(low_base, "increase", 0.5, "relative")
    assert v == "inconclusive" and "points" in reason
    with pytest.raises(ValueError, match="direction"):
        verdict(RATIO5, "sideways", 0.1)


def test_proportion_relative_claim_uses_log_ratio_interval() -> None:
    e = POINTS5  # ratio ~ 1.56, interval from the log ratios
    low = math.log1p(e.relative_ci_low)
    assert verdict(e, "increase", math.expm1(low) - 0.01)[0] == "confirmed"
    assert verdict(e, "increase", math.expm1(low) + 0.01)[0] == "inconclusive"


def test_relative_claim_problem() -> None:
    assert relative_claim_problem("ratio", [0.001]) is None
    text = relative_claim_problem("difference", None)
    assert text is not None and "absolute" in text
    text = relative_claim_problem("proportion", [0.5, 0.01])
    assert text is not None and "points" in text and "0.05" in text
    assert relative_claim_problem("proportion", [0.5, 0.05]) is None
    text = relative_claim_problem("proportion", None)  # nothing shows the baseline is away from 0
    assert text is not None and "points" in text
    assert "relative" in absolute_claim_problem("ratio")
    assert absolute_claim_problem("proportion") is None and absolute_claim_problem("difference") is None


# --------------------------------------------------------------------------- multiplicity and power


def test_holm_hand_example() -> None:
    # sorted: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm_bonferroni([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm_bonferroni([None, 0.01, 0.5, None, 0.04])
    assert out[0] is None and out[3] is None
    assert out[1:3] + out[4:] == pytest.approx([0.03, 0.5, 0.08])
    assert holm_bonferroni([0.6, 0.7]) == [1.0, 1.0]
    with pytest.raises(ValueError):
        holm_bonferroni([1.5])


def test_corrected_confidence_widens_interval() -> None:
    assert corrected_confidence(0.95, 5) == pytest.approx(0.99)
    with pytest.raises(ValueError):
        corrected_confidence(0.95, 0)
    b, a = [1.0, 1.1, 0.9, 1.0, 1.2], [2.0, 2.1, 1.7, 2.2, 2.3]
    wide = paired_effect(b, a, scale="ratio", confidence=corrected_confidence(0.95, 4))
    assert wide.effect_ci_low < RATIO5.effect_ci_low and wide.effect_ci_high > RATIO5.effect_ci_high


def test_minimum_detectable_effect_known_value() -> None:
    # (t_{0.975,9} + t_{0.80,9}) / sqrt(10)
    expected = (sps.t.ppf(0.975, 9) + sps.t.ppf(0.8, 9)) / math.sqrt(10)
    assert minimum_detectable_effect(1.0, 10) == pytest.approx(expected)
    assert minimum_detectable_effect(1.0, 1) is None and minimum_detectable_effect(None, 10) is None
    assert minimum_detectable_effect(0.0, 10) == 0.0


def test_mde_warning_in_claim_units() -> None:
    noisy = paired_effect([1.0] * 5, [0.9, 1.2, 0.7, 1.1, 0.95], scale="ratio")  # log sd ~ 0.19
    text = mde_warning(noisy, 0.05, threshold_unit="relative", direction="increase")
    assert text is not None and "underpowered" in text and "log-ratio" in text
    # a 90 % decrease is ln(0.1) = -2.3 on the log scale: easily detectable
    assert mde_warning(noisy, 0.9, threshold_unit="relative", direction="decrease") is None
    points = paired_effect([0.5] * 4, [0.52, 0.6, 0.49, 0.58], scale="proportion")
    assert mde_warning(points, 0.01, threshold_unit="absolute") is not None
    assert mde_warning(points, 0.5, threshold_unit="absolute") is None
    assert mde_warning(points, 0.01, threshold_unit="relative") is not None  # log-ratio sd recovered
    assert mde_warning(noisy, None) is None
    assert mde_warning(paired_effect([1.0], [2.0], scale="ratio"), 0.1) is not None


def test_heterogeneity_uses_effect_and_sd() -> None:
    a = paired_effect([0, 0, 0], [0, 1, 2], scale="difference")  # y = 1, var = 1/3, w = 3
    b = paired_effect([0, 0, 0], [2, 3, 4], scale="difference")  # y = 3, var = 1/3, w = 3
    h = heterogeneity([a, b])
    assert h.q == pytest.approx(6.0) and h.df == 1 and h.pooled_mean == pytest.approx(2.0)
    assert h.i_squared == pytest.approx(5 / 6) and h.p_value == pytest.approx(sps.chi2.sf(6, 1))
    flat = paired_effect([0, 0, 0], [1, 1, 1], scale="difference")
    h = heterogeneity([a, flat])
    assert h.q is None and h.n_groups == 1
    json.dumps(h.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="share a scale"):
        heterogeneity([a, RATIO5])


# --------------------------------------------------------------------------- axis scores


def test_axis_score_hand_example() -> None:
    # energy (ratio, lower better) halves on each seed: oriented ln 2 each seed;
    # accuracy (proportion, higher better) 0.5 -> 0.8: logit(0.8) - logit(0.5) = ln 4
    s = axis_score(
        [
            ("energy", "ratio", False, [1.0, 2.0, 4.0], [0.5, 1.0, 2.0]),
            AxisMetric("accuracy", "proportion", True, [0.5, 0.5, 0.5], [0.8, 0.8, 0.8]),
        ]
    )
    assert s is not None and s.unit == "log" and s.n_seeds == 3 and s.n_metrics == 2
    assert s.score == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert s.factor == pytest.approx(math.sqrt(8))
    assert s.components == pytest.approx({"energy": math.log(2), "accuracy": math.log(4)})
    # Zero spread from 3 seeds: not significant (the exact sign test needs 6 at 95%).
    assert s.deterministic and s.ci_low == s.ci_high == s.score and not s.significant
    six = axis_score([("energy", "ratio", False, [1.0, 2.0, 4.0] * 2, [0.5, 1.0, 2.0] * 2)])
    assert six.deterministic and six.significant and six.n_seeds == 6


def test_axis_score_t_interval_over_seeds_and_missing_values() -> None:
    e = math.exp
    metrics = [
        ("m1", "ratio", True, [1.0, 1.0, 1.0, 1.0], [e(1.0), e(2.0), e(3.0), None]),
        ("m2", "ratio", False, [1.0, 1.0, 1.0, 1.0], [e(-3.0), None, e(-1.0), e(-2.0)]),
    ]
    s = axis_score(metrics)
    per_seed = np.array([2.0, 2.0, 2.0, 2.0])  # (1+3)/2, 2, (3+1)/2, 2
    assert s.deterministic and s.score == pytest.approx(per_seed.mean())
    metrics[1] = ("m2", "ratio", False, [1.0] * 4, [e(-5.0), None, e(-1.0), e(-2.0)])
    s = axis_score(metrics)
    per_seed = np.array([3.0, 2.0, 2.0, 2.0])
    ci = sps.ttest_1samp(per_seed, 0.0).confidence_interval(0.95)
    assert s.score == pytest.approx(per_seed.mean()) and (s.ci_low, s.ci_high) == pytest.approx((ci.low, ci.high))
    assert s.components == pytest.approx({"m1": 2.0, "m2": 8 / 3})


def test_axis_score_zero_variance_metric_counts() -> None:
    # superposition-like: the only safety metric falls 1 -> 0 on every seed (lower is better)
    s = axis_score([("interference", "proportion", False, [1.0] * 6, [0.0] * 6)])
    expected = math.log(0.99 / 0.01) * 2  # -(logit(0.01) - logit(0.99))
    assert s is not None and s.score == pytest.approx(expected) and s.deterministic and s.significant
    assert lean_flag(s, None) == "safety-leaning"


def test_axis_score_leaves_out_censored_and_difference_metrics() -> None:
    metrics = [
        AxisMetric("loss", "ratio", False, [1.0, 1.0, 1.0], [0.5, 0.6, 0.4]),
        AxisMetric("steps", "ratio", False, [100.0, 100.0, 100.0], [40.0, 50.0, 45.0],
                   baseline_censored=[True, False, False]),
        AxisMetric("count", "difference", True, [1.0, 2.0, 3.0], [5.0, 6.0, 7.0]),
    ]
    s = axis_score(metrics)
    assert s.n_metrics == 1 and set(s.components) == {"loss"}
    assert any("'steps' is left out" in w for w in s.warnings)
    assert any("'count' is left out" in w for w in s.warnings)
    # Two seeds have a clean interval above 0 but fall short of the minimum for significance.
    two = axis_score([AxisMetric("loss", "ratio", False, [1.0, 1.0], [0.5, 0.6])], min_seeds=3)
    assert two.ci_low is not None and not two.significant


def test_axis_score_same_effect_same_score_whatever_the_noise() -> None:
    rng = np.random.default_rng(3)
    base = rng.lognormal(0, 0.1, size=20)
    quiet = axis_score([("loss", "ratio", False, base, base * 0.5 * np.exp(0.01 * np.resize([1, -1], 20)))])
    noisy = axis_score([("loss", "ratio", False, base, base * 0.5 * np.exp(0.5 * np.resize([1, -1], 20)))])
    assert quiet.score == pytest.approx(noisy.score) == pytest.approx(math.log(2))
    assert noisy.ci_high - noisy.ci_low > quiet.ci_high - quiet.ci_low


def test_axis_score_edge_cases() -> None:
    assert axis_score([]) is None
    assert axis_score([("m", "ratio", True, [None, None], [None, None])]) is None
    one = axis_score([("m", "ratio", True, [1.0], [2.0])])
    assert one.n_seeds == 1 and one.ci_low is None and not one.significant
    with pytest.raises(ValueError, match="one entry per seed"):
        axis_score([("a", "ratio", True, [1.0], [2.0]), ("b", "ratio", True, [1.0, 1.0], [2.0, 2.0])])
    json.dumps(one.to_dict(), allow_nan=False)


def _score(low: float | None, high: float | None) -> AxisScore:
    significant = low is not None and high is not None and (low > 0 or high < 0)
    return AxisScore(0.0, low, high, significant, 3, 1, "log", 1.0, {}, False, 0.95)


@pytest.mark.parametrize(
    ("safety", "capability", "expected"),
    [
        (_score(0.1, 0.5), _score(-0.1, 0.5), "safety-leaning"),
        (_score(-0.1, 0.5), _score(0.1, 0.5), "capability-leaning"),
        (_score(0.1, 0.5), _score(0.1, 0.5), "dual"),
        (_score(-0.5, -0.1), None, "neither"),
        (_score(None, None), None, "neither"),
        (None, None, "neither"),
        # an interval above 0 that is not significant (too few seeds) improves nothing
        (AxisScore(0.3, 0.1, 0.5, False, 2, 1, "log", 1.35, {}, False, 0.95), None, "neither"),
        # the to_dict() form reads the same
        (_score(0.1, 0.5).to_dict(), None, "safety-leaning"),
    ],
)
def test_lean_flag(safety: AxisScore | None, capability: AxisScore | None, expected: str) -> None:
    assert lean_flag(safety, capability) == expected


# --------------------------------------------------------------------------- correlations


def test_permutation_p_value_for_three_points_is_exact() -> None:
    # n = 3, perfectly ordered: of the 3! = 6 orderings, the identity and the reversal reach |r| = 1
    c = correlation_with_interval([1, 2, 3], [10, 20, 30], method="spearman", min_n=3)
    assert c.r == pytest.approx(1.0) and c.p_value == pytest.approx(2 / 6)
    assert c.p_value_method == "permutation" and c.min_p_value == pytest.approx(1 / 6)
    assert c.ci_low is None and "degenerate" in c.warning
    # Pearson on [1, 2, 4] vs [1, 3, 2]: r = 0.5 (orderings with |r| >= 0.5: 4 of 6)
    c = correlation_with_interval([1, 2, 4], [1, 3, 2], min_n=3)
    rs = [
        abs(sps.pearsonr([1, 2, 4], p)[0]) for p in ([1, 2, 3], [1, 3, 2], [2, 1, 3], [2, 3, 1], [3, 1, 2], [3, 2, 1])
    ]
    assert c.p_value == pytest.approx(np.mean(np.array(rs) >= abs(c.r) - 1e-12))


def test_permutation_p_matches_scipy_exact_permutation_test() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=7), rng.normal(size=7)
    x = x + y
    c = correlation_with_interval(x, y)
    # one sample with permutation_type="pairings": every one of the 7! orderings of y against a fixed x;
    # two-sided as P(|r_perm| >= |r|)
    ref = sps.permutation_test(
        (y,), lambda b, axis=-1: np.abs(sps.pearsonr(np.broadcast_to(x, b.shape), b, axis=axis)[0]),
        permutation_type="pairings", n_resamples=np.inf, vectorized=True, alternative="greater",
    )  # fmt: skip
    assert c.r == pytest.approx(sps.pearsonr(x, y)[0]) and c.p_value == pytest.approx(ref.pvalue)


def test_large_n_t_approximation_and_fisher_interval() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=30)
    y = 0.5 * x + rng.normal(size=30)
    c = correlation_with_interval(x, y)
    r, p = sps.pearsonr(x, y)
    assert c.r == pytest.approx(r) and c.p_value == pytest.approx(p) and c.p_value_method == "t"
    half = sps.norm.ppf(0.975) / math.sqrt(27)
    assert (c.ci_low, c.ci_high) == pytest.approx((math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)))
    s = correlation_with_interval(x, y, method="spearman")
    rho, sp = sps.spearmanr(x, y)
    half = sps.norm.ppf(0.975) * math.sqrt(1.06 / 27)
    assert s.r == pytest.approx(rho) and s.p_value == pytest.approx(sp)
    assert s.ci_low == pytest.approx(math.tanh(math.atanh(rho) - half))


def test_correlation_p_value_floor_and_withholding() -> None:
    x = list(range(9))
    c = correlation_with_interval(x, [2 * v for v in x])
    assert c.p_value == pytest.approx(1 / math.factorial(9))  # t approximation gives 0: floored
    few = correlation_with_interval([1, 2, 3, 4], [1, 2, 4, 3])
    assert few.r is None and few.p_value is None and "withheld" in few.warning
    flat = correlation_with_interval([1, 1, 1, 1, 1], [1, 2, 3, 4, 5])
    assert flat.r is None and "constant" in flat.warning
    # the landscape bug: "r = -1, n = 3, p < 0.001" with two identical points
    tiny = correlation_with_interval([0.5, 0.5, 2.0], [1.0, 1.0, -3.0])
    assert tiny.r is None
    small = correlation_with_interval([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5], method="spearman")
    assert small.r is not None and small.ci_low is None and "n = 10" in small.warning
    json.dumps(small.to_dict(), allow_nan=False)


# --------------------------------------------------------------------------- differential progress


def test_differential_progress_matches_linregress() -> None:
    cap = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    saf = np.array([0.1, 0.4, 0.4, 1.2, 1.0, 1.6])
    se = [0.1, 0.2, None, 0.1, 0.1, 0.3]
    d = differential_progress(saf, cap, se)
    ref = sps.linregress(cap, saf)
    t = sps.t.ppf(0.975, 4)
    assert d.n == 6 and d.slope == pytest.approx(ref.slope) and d.intercept == pytest.approx(ref.intercept)
    assert (d.slope_ci_low, d.slope_ci_high) == pytest.approx((ref.slope - t * ref.stderr, ref.slope + t * ref.stderr))
    assert d.intercept_ci_low == pytest.approx(ref.intercept - t * ref.intercept_stderr)
    resid = saf - (ref.intercept + ref.slope * cap)
    s2 = np.sum(resid**2) / 4
    sxx = np.sum((cap - cap.mean()) ** 2)
    p0 = d.points[0]
    assert p0.residual == pytest.approx(resid[0])
    half = t * math.sqrt(s2 * (1 / 6 + (cap[0] - cap.mean()) ** 2 / sxx) + 0.1**2)
    assert (p0.ci_low, p0.ci_high) == pytest.approx((resid[0] - half, resid[0] + half))
    assert d.points[2].ci_low is None and "standard error" in d.warning
    json.dumps(d.to_dict(), allow_nan=False)


def test_differential_progress_withheld() -> None:
    d = differential_progress([1, 2, 3, 4], [1, 2, 3, 4], [0.1] * 4)
    assert d.slope is None and d.points == () and "withheld" in d.warning
    d = differential_progress([1, 2, 3, 4, 5], [1, 1, 1, 1, 1], [0.1] * 5)
    assert d.slope is None and "same capability" in d.warning


# --------------------------------------------------------------------------- capabilities correlation


def _models(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    accuracy = rng.uniform(0.3, 0.9, size=n)
    loss = 2.0 - 2.0 * accuracy + rng.normal(0, 0.05, size=n)  # falls as accuracy rises
    safety = accuracy + rng.normal(0, 0.1, size=n)  # a safety metric that tracks capability
    return accuracy, loss, safety


def test_capabilities_correlation_orients_lower_is_better_metrics() -> None:
    accuracy, loss, safety = _models()
    by_accuracy = capabilities_correlation(
        safety, accuracy[:, None], safety_higher_is_better=True, capability_higher_is_better=[True]
    )
    by_loss = capabilities_correlation(
        safety, loss[:, None], safety_higher_is_better=True, capability_higher_is_better=[False]
    )
    mixed = capabilities_correlation(
        safety, np.c_[accuracy, loss], safety_higher_is_better=True, capability_higher_is_better=[True, False]
    )
    assert by_accuracy.r > 0.5 and by_loss.r > 0.5 and mixed.r > 0.5
    assert by_accuracy.r == pytest.approx(sps.spearmanr(safety, accuracy)[0])
    assert by_loss.r == pytest.approx(sps.spearmanr(safety, -loss)[0])
    # a lower-is-better safety metric is flipped too
    flipped = capabilities_correlation(
        -safety, accuracy[:, None], safety_higher_is_better=False, capability_higher_is_better=[True]
    )
    assert flipped.r == pytest.approx(by_accuracy.r)
    assert by_accuracy.ci_low <= by_accuracy.r <= by_accuracy.ci_high


def test_capabilities_correlation_of_no_observations_is_withheld_not_an_error() -> None:
    """A plugin with two capability metrics and no usable run yet (the landscape answered 500)."""
    empty = capabilities_correlation([], [], safety_higher_is_better=True, capability_higher_is_better=[True, False],
                                     clusters=[], min_n=10)
    assert empty.r is None and empty.warning


def test_capabilities_correlation_clusters_and_withholding() -> None:
    accuracy, loss, safety = _models(20)
    clusters = np.repeat(np.arange(10), 2)
    c = capabilities_correlation(
        safety, np.c_[accuracy, loss], safety_higher_is_better=True, capability_higher_is_better=[True, False],
        clusters=clusters, n_bootstrap=300,
    )  # fmt: skip
    assert c.n == 20 and c.n_clusters == 10 and c.p_value is None and "clusters" in c.warning
    again = capabilities_correlation(
        safety, np.c_[accuracy, loss], safety_higher_is_better=True, capability_higher_is_better=[True, False],
        clusters=clusters, n_bootstrap=300,
    )  # fmt: skip
    assert (c.ci_low, c.ci_high) == (again.ci_low, again.ci_high)  # fixed RNG
    uneven = capabilities_correlation(
        safety, accuracy, safety_higher_is_better=True, capability_higher_is_better=[True],
        clusters=[0, 0, 0, *range(1, 18)], n_bootstrap=200,
    )  # fmt: skip
    assert uneven.r is not None and uneven.ci_low is not None and uneven.n_clusters == 18
    few = capabilities_correlation(
        safety[:9], accuracy[:9], safety_higher_is_better=True, capability_higher_is_better=[True]
    )
    assert few.r is None and "withheld" in few.warning
    with pytest.raises(ValueError, match="one flag per column"):
        capabilities_correlation(safety, accuracy, safety_higher_is_better=True, capability_higher_is_better=[])
