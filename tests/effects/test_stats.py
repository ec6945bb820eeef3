"""Tests for registry.effects.stats (pure statistics; no Django needed)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from registry.effects.stats import (
    AxisScore,
    EffectEstimate,
    axis_score,
    capabilities_correlation,
    claim_verdict,
    corrected_confidence,
    correlation_with_interval,
    heterogeneity,
    holm_bonferroni,
    lean_flag,
    mde_warning,
    minimum_detectable_effect,
    paired_effect,
)

FAST = settings(max_examples=60, deadline=None)

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def paired_samples(draw: st.DrawFn, min_n: int = 2, max_n: int = 15) -> tuple[list[float], list[float]]:
    n = draw(st.integers(min_value=min_n, max_value=max_n))
    baseline = draw(st.lists(finite, min_size=n, max_size=n))
    intervention = draw(st.lists(finite, min_size=n, max_size=n))
    return baseline, intervention


def estimate_with(baseline_mean: float, ci: tuple[float, float] | None, n: int = 10) -> EffectEstimate:
    """A hand-built estimate for verdict tests: only baseline_mean and the CI matter."""
    low, high = (None, None) if ci is None else ci
    scale = abs(baseline_mean)
    return EffectEstimate(
        n=n,
        baseline_mean=baseline_mean,
        intervention_mean=baseline_mean,
        mean_difference=0.0 if ci is None else (ci[0] + ci[1]) / 2,
        sd_difference=1.0,
        relative_change=None,
        ci_low=low,
        ci_high=high,
        relative_ci_low=None if low is None or scale == 0 else low / scale,
        relative_ci_high=None if high is None or scale == 0 else high / scale,
        p_value=None,
        hedges_g=None,
        interval="t",
        confidence=0.95,
    )


# --------------------------------------------------------------------------- paired_effect: known values


def test_hand_computed_small_case() -> None:
    # diffs [1, 2, 3]: mean 2, sd 1, se 1/sqrt(3), t_{0.975,2} = 4.302653 -> 2 +/- 2.484138
    e = paired_effect([10, 10, 10], [11, 12, 13])
    assert e.n == 3
    assert e.baseline_mean == 10 and e.intervention_mean == 12
    assert e.mean_difference == pytest.approx(2.0)
    assert e.sd_difference == pytest.approx(1.0)
    assert e.ci_low == pytest.approx(2 - 2.484138, abs=1e-5)
    assert e.ci_high == pytest.approx(2 + 2.484138, abs=1e-5)
    assert e.relative_change == pytest.approx(0.2)
    assert e.relative_ci_low == pytest.approx((2 - 2.484138) / 10, abs=1e-6)
    assert e.relative_ci_high == pytest.approx((2 + 2.484138) / 10, abs=1e-6)
    # t = 2 * sqrt(3), df = 2: p = 1 - t / sqrt(t^2 + 2) = 1 - sqrt(6/7)
    assert e.p_value == pytest.approx(1 - math.sqrt(6 / 7), rel=1e-9)
    # d_z = 2 / 1, J = 1 - 3 / (4 * 2 - 1) = 4/7 -> g = 8/7
    assert e.hedges_g == pytest.approx(8 / 7)
    assert e.interval == "t" and e.confidence == 0.95
    assert e.warnings == ()


def test_relative_uses_absolute_baseline_mean() -> None:
    e = paired_effect([-10, -10, -10], [-11, -12, -13])
    assert e.relative_change == pytest.approx(-0.2)
    assert e.relative_ci_low is not None and e.relative_ci_low < e.relative_change < e.relative_ci_high


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scipy_ttest_rel(seed: int) -> None:
    rng = np.random.default_rng(seed)
    b = rng.normal(5, 1, size=12)
    a = b + rng.normal(0.4, 0.7, size=12)
    e = paired_effect(b, a, confidence=0.9)
    ref = sps.ttest_rel(a, b)
    assert e.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.9)
    assert e.ci_low == pytest.approx(ci.low, rel=1e-9)
    assert e.ci_high == pytest.approx(ci.high, rel=1e-9)
    assert e.mean_difference == pytest.approx(float(np.mean(a - b)))


def test_zero_variance_p_values() -> None:
    same = paired_effect([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.p_value == 1.0 and same.mean_difference == 0.0
    assert (same.ci_low, same.ci_high) == (0.0, 0.0)
    assert same.hedges_g is None
    shifted = paired_effect([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])
    assert shifted.p_value == 0.0
    assert shifted.ci_low == shifted.ci_high == pytest.approx(0.5)


def test_single_seed_has_no_interval() -> None:
    e = paired_effect([1.0], [2.0])
    assert e.mean_difference == 1.0
    assert e.ci_low is None and e.ci_high is None and e.p_value is None and e.sd_difference is None
    assert e.hedges_g is None
    assert any("fewer than 2 seeds" in w for w in e.warnings)
    assert claim_verdict(e, direction="increase") == "inconclusive"


def test_two_seeds_hedges_undefined() -> None:
    e = paired_effect([0.0, 0.0], [1.0, 3.0])
    assert e.p_value is not None and e.hedges_g is None
    assert any("Hedges" in w for w in e.warnings)


def test_zero_baseline_mean_relative_none() -> None:
    e = paired_effect([-1.0, 1.0, 0.0], [0.0, 2.0, 1.5])
    assert e.relative_change is None and e.relative_ci_low is None and e.relative_ci_high is None
    assert any("baseline mean is 0" in w for w in e.warnings)


def test_to_dict_is_json_safe() -> None:
    # relative quantities overflow to inf -> must serialise as None
    e = paired_effect([1e-300, 1e-300, 1e-300], [1e300, 2e300, 3e300])
    d = e.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["relative_change"] is None
    assert isinstance(d["warnings"], list)
    json.dumps(paired_effect([1.0], [1.0]).to_dict(), allow_nan=False)


def test_bootstrap_interval() -> None:
    rng = np.random.default_rng(7)
    b = rng.normal(0, 1, size=60)
    a = b + rng.normal(1.0, 1.0, size=60)
    t = paired_effect(b, a)
    bs1 = paired_effect(b, a, interval="bootstrap", n_bootstrap=2000, rng_seed=3)
    bs2 = paired_effect(b, a, interval="bootstrap", n_bootstrap=2000, rng_seed=3)
    bs3 = paired_effect(b, a, interval="bootstrap", n_bootstrap=2000, rng_seed=4)
    assert bs1 == bs2  # deterministic given rng_seed
    assert (bs1.ci_low, bs1.ci_high) != (bs3.ci_low, bs3.ci_high)
    assert bs1.interval == "bootstrap"
    assert bs1.ci_low < bs1.mean_difference < bs1.ci_high
    assert bs1.p_value == t.p_value  # p is always the paired t-test
    # near-normal data: percentile bootstrap close to the t interval
    assert bs1.ci_low == pytest.approx(t.ci_low, abs=0.1)
    assert bs1.ci_high == pytest.approx(t.ci_high, abs=0.1)
    small = paired_effect([0, 0, 0], [1, 2, 3], interval="bootstrap", n_bootstrap=200)
    assert any("bootstrap" in w for w in small.warnings)


# --------------------------------------------------------------------------- paired_effect: validation


@pytest.mark.parametrize(
    ("baseline", "intervention", "match"),
    [
        ([1.0, 2.0], [1.0], "equal lengths"),
        ([1.0, float("nan")], [1.0, 2.0], "finite"),
        ([1.0, 2.0], [float("inf"), 2.0], "finite"),
        ([], [], "at least one seed"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "one-dimensional"),
        (["a"], [1.0], "numbers"),
    ],
)
def test_paired_effect_validation(baseline: list, intervention: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        paired_effect(baseline, intervention)


def test_paired_effect_bad_options() -> None:
    with pytest.raises(ValueError, match="confidence"):
        paired_effect([1, 2], [2, 3], confidence=1.0)
    with pytest.raises(ValueError, match="interval"):
        paired_effect([1, 2], [2, 3], interval="bca")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_bootstrap"):
        paired_effect([1, 2], [2, 3], interval="bootstrap", n_bootstrap=0)


# --------------------------------------------------------------------------- paired_effect: properties


@FAST
@given(paired_samples())
def test_swapping_arms_flips_sign(sample: tuple[list[float], list[float]]) -> None:
    b, a = sample
    fwd = paired_effect(b, a)
    rev = paired_effect(a, b)
    assert rev.mean_difference == pytest.approx(-fwd.mean_difference, abs=1e-9)
    assert rev.ci_low == pytest.approx(-fwd.ci_high, abs=1e-9)
    assert rev.ci_high == pytest.approx(-fwd.ci_low, abs=1e-9)
    assert rev.p_value == pytest.approx(fwd.p_value, abs=1e-12)
    if fwd.hedges_g is not None:
        assert rev.hedges_g == pytest.approx(-fwd.hedges_g)


@FAST
@given(paired_samples())
def test_more_seeds_narrow_t_interval(sample: tuple[list[float], list[float]]) -> None:
    b, a = sample
    once = paired_effect(b, a)
    twice = paired_effect(b + b, a + a)
    w1 = once.ci_high - once.ci_low
    w2 = twice.ci_high - twice.ci_low
    assert twice.mean_difference == pytest.approx(once.mean_difference, abs=1e-9)
    if w1 > 1e-9:
        assert w2 < w1
    else:
        assert w2 <= w1 + 1e-12


@FAST
@given(paired_samples(), st.sampled_from(["t", "bootstrap"]))
def test_interval_contains_mean_difference(sample: tuple[list[float], list[float]], method: str) -> None:
    b, a = sample
    e = paired_effect(b, a, interval=method, n_bootstrap=200)  # type: ignore[arg-type]
    assert e.ci_low <= e.ci_high
    if method == "t":  # the percentile bootstrap need not contain it in pathological samples
        assert e.ci_low <= e.mean_difference <= e.ci_high
    if e.relative_ci_low is not None and e.relative_ci_high is not None:
        assert e.relative_ci_low <= e.relative_ci_high
    json.dumps(e.to_dict(), allow_nan=False)


@FAST
@given(
    st.lists(finite, min_size=1, max_size=12),
    st.sampled_from(["increase", "decrease"]),
    st.one_of(st.none(), st.floats(min_value=0, max_value=5)),
    st.sampled_from(["t", "bootstrap"]),
    st.booleans(),
)
def test_zero_effect_never_confirmed(
    values: list[float], direction: str, r: float | None, method: str, higher_is_better: bool
) -> None:
    e = paired_effect(values, list(values), interval=method, n_bootstrap=100)  # type: ignore[arg-type]
    assert e.mean_difference == 0.0
    verdict = claim_verdict(
        e,
        direction=direction,  # type: ignore[arg-type]
        min_relative_effect=r,
        higher_is_better=higher_is_better,
    )
    assert verdict != "confirmed"


# --------------------------------------------------------------------------- claim_verdict


@pytest.mark.parametrize(
    ("ci", "expected"),
    [
        ((-9.8, -9.2), "confirmed"),  # relative (-0.98, -0.92): entirely below -0.9
        ((-9.5, -8.0), "inconclusive"),  # straddles -0.9
        ((-5.0, -4.0), "refuted"),  # relative (-0.5, -0.4): entirely above -0.9
    ],
)
def test_decrease_with_minimum(ci: tuple[float, float], expected: str) -> None:
    assert claim_verdict(estimate_with(10.0, ci), direction="decrease", min_relative_effect=0.9) == expected
    # the same through the corrected-CI override on an estimate with another interval
    assert (
        claim_verdict(estimate_with(10.0, (0.0, 1.0)), direction="decrease", min_relative_effect=0.9, ci=ci) == expected
    )


@pytest.mark.parametrize(
    ("ci", "r", "expected"),
    [
        ((3.0, 4.0), 0.2, "confirmed"),
        ((1.0, 4.0), 0.2, "inconclusive"),
        ((-1.0, 1.0), 0.2, "refuted"),
        ((0.1, 1.0), None, "confirmed"),
        ((-0.1, 1.0), None, "inconclusive"),
        ((-1.0, -0.1), 0.0, "refuted"),
        ((0.0, 0.0), 0.0, "inconclusive"),  # degenerate zero effect: strict inequalities
    ],
)
def test_increase(ci: tuple[float, float], r: float | None, expected: str) -> None:
    assert claim_verdict(estimate_with(-10.0, ci), direction="increase", min_relative_effect=r) == expected


def test_decrease_degenerate_zero_effect_with_minimum_is_refuted() -> None:
    assert claim_verdict(estimate_with(5.0, (0.0, 0.0)), direction="decrease", min_relative_effect=0.5) == "refuted"
    assert claim_verdict(estimate_with(5.0, (0.0, 0.0)), direction="decrease") == "inconclusive"


@pytest.mark.parametrize(
    ("higher_is_better", "ci", "expected"),
    [
        (True, (-0.3, 0.2), "confirmed"),  # relative (-0.03, 0.02) > -0.05
        (True, (-0.8, 0.1), "inconclusive"),
        (True, (-1.0, -0.6), "refuted"),  # entirely below -0.05
        (False, (-0.2, 0.3), "confirmed"),  # relative high 0.03 < +0.05
        (False, (-0.1, 0.8), "inconclusive"),
        (False, (0.6, 1.0), "refuted"),
    ],
)
def test_non_inferior(higher_is_better: bool, ci: tuple[float, float], expected: str) -> None:
    verdict = claim_verdict(
        estimate_with(10.0, ci), direction="non_inferior", margin=0.05, higher_is_better=higher_is_better
    )
    assert verdict == expected


def test_zero_baseline_mean_verdicts() -> None:
    e = estimate_with(0.0, (1.0, 2.0))
    assert claim_verdict(e, direction="increase") == "confirmed"  # sign-only: absolute CI suffices
    assert claim_verdict(e, direction="increase", min_relative_effect=0.1) == "inconclusive"


def test_missing_ci_is_inconclusive() -> None:
    assert claim_verdict(estimate_with(10.0, None), direction="decrease", min_relative_effect=0.5) == "inconclusive"
    assert claim_verdict(estimate_with(10.0, None), direction="non_inferior", margin=0.1) == "inconclusive"


def test_claim_verdict_validation() -> None:
    e = estimate_with(10.0, (1.0, 2.0))
    with pytest.raises(ValueError, match="min_relative_effect"):
        claim_verdict(e, direction="increase", min_relative_effect=-0.1)
    with pytest.raises(ValueError, match="margin"):
        claim_verdict(e, direction="non_inferior")
    with pytest.raises(ValueError, match="margin"):
        claim_verdict(e, direction="increase", margin=0.1)
    with pytest.raises(ValueError, match="direction"):
        claim_verdict(e, direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ci"):
        claim_verdict(e, direction="increase", ci=(2.0, 1.0))


@FAST
@given(
    st.floats(min_value=-100, max_value=100).filter(lambda x: x != 0),
    finite,
    st.floats(min_value=0, max_value=1e3),
    st.floats(min_value=0, max_value=3),
)
def test_decrease_and_increase_never_both_confirmed(baseline_mean: float, low: float, width: float, r: float) -> None:
    e = estimate_with(baseline_mean, (low, low + width))
    dec = claim_verdict(e, direction="decrease", min_relative_effect=r)
    inc = claim_verdict(e, direction="increase", min_relative_effect=r)
    if dec == "confirmed":
        assert inc != "confirmed"
        assert inc == "refuted"
    if inc == "confirmed":
        assert dec == "refuted"


@FAST
@given(paired_samples(min_n=3), st.floats(min_value=0, max_value=2))
def test_verdicts_consistent_on_real_estimates(sample: tuple[list[float], list[float]], r: float) -> None:
    e = paired_effect(*sample)
    if claim_verdict(e, direction="decrease", min_relative_effect=r) == "confirmed":
        assert claim_verdict(e, direction="increase", min_relative_effect=r) != "confirmed"


# --------------------------------------------------------------------------- multiplicity


def test_holm_hand_example() -> None:
    # sorted: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm_bonferroni([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_holm_none_passthrough_and_cap() -> None:
    out = holm_bonferroni([None, 0.01, 0.5, None, 0.04])
    assert out[0] is None and out[3] is None
    # m = 3: 0.01*3 = 0.03, 0.04*2 = 0.08, max(0.08, 0.5*1) = 0.5
    assert out[1:3] + out[4:] == pytest.approx([0.03, 0.5, 0.08])
    assert holm_bonferroni([0.6, 0.7]) == [1.0, 1.0]  # 1.2 capped at 1
    assert holm_bonferroni([]) == []
    assert holm_bonferroni([None]) == [None]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_bonferroni([0.1, float("nan")])
    with pytest.raises(ValueError):
        holm_bonferroni([1.5])


@FAST
@given(st.lists(st.one_of(st.none(), st.floats(min_value=0, max_value=1)), max_size=20))
def test_holm_properties(ps: list[float | None]) -> None:
    adj = holm_bonferroni(ps)
    assert len(adj) == len(ps)
    pairs = [(p, a) for p, a in zip(ps, adj, strict=True) if p is not None]
    assert all(a is None for p, a in zip(ps, adj, strict=True) if p is None)
    for p, a in pairs:
        assert p <= a <= 1.0
    # monotone: a smaller raw p never gets a larger adjusted p
    for p1, a1 in pairs:
        for p2, a2 in pairs:
            if p1 < p2:
                assert a1 <= a2


def test_corrected_confidence() -> None:
    assert corrected_confidence(0.95, 5) == pytest.approx(0.99)
    assert corrected_confidence(0.9, 1) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        corrected_confidence(0.95, 0)
    with pytest.raises(ValueError):
        corrected_confidence(1.5, 2)


def test_corrected_interval_is_wider() -> None:
    b, a = [10, 11, 9, 10, 12], [8, 9, 8, 9, 9]
    plain = paired_effect(b, a)
    corrected = paired_effect(b, a, confidence=corrected_confidence(0.95, 4))
    assert corrected.ci_low < plain.ci_low and corrected.ci_high > plain.ci_high


# --------------------------------------------------------------------------- power


def test_minimum_detectable_effect_known_value() -> None:
    # (t_{0.975,9} + t_{0.80,9}) / sqrt(10) = (2.2622 + 0.8834) / 3.1623
    assert minimum_detectable_effect(1.0, 10) == pytest.approx((2.2622 + 0.8834) / math.sqrt(10), rel=1e-3)
    assert minimum_detectable_effect(2.0, 10) == pytest.approx(2 * minimum_detectable_effect(1.0, 10))
    assert minimum_detectable_effect(1.0, 40) < minimum_detectable_effect(1.0, 10)
    assert minimum_detectable_effect(1.0, 1) is None
    assert minimum_detectable_effect(None, 10) is None
    assert minimum_detectable_effect(0.0, 10) == 0.0
    with pytest.raises(ValueError):
        minimum_detectable_effect(-1.0, 10)


def test_mde_warning() -> None:
    # sd of diffs = 1 around a 2 % drop of a baseline of 100, n = 5
    noisy = paired_effect([100.0] * 5, [98.0, 97.0, 99.0, 97.5, 98.5])
    text = mde_warning(noisy, 0.005)
    assert text is not None and "underpowered" in text
    assert mde_warning(noisy, 0.5) is None
    assert mde_warning(noisy, -0.5) is None  # magnitude is what counts
    assert mde_warning(noisy, None) is None
    single = paired_effect([1.0], [2.0])
    assert mde_warning(single, 0.1) is not None


# --------------------------------------------------------------------------- axis scores


def test_axis_score_hand_example() -> None:
    up = paired_effect([0, 0, 0], [1, 2, 3])  # g = 8/7, higher is better
    down = paired_effect([0, 0, 0], [-1, -2, -3])  # g = -8/7, lower is better -> +8/7
    score = axis_score([(up, True), (down, False)])
    assert score is not None
    g = 8 / 7
    se_i = math.sqrt(1 / 3 + g * g / 6)
    se = math.sqrt(2 * se_i**2) / 2
    assert score.components == pytest.approx((g, g))
    assert score.score == pytest.approx(g)
    assert score.se == pytest.approx(se)
    assert score.ci_low == pytest.approx(g - 1.959964 * se, abs=1e-5)
    assert score.ci_high == pytest.approx(g + 1.959964 * se, abs=1e-5)
    assert score.significant and score.n_metrics == 2
    json.dumps(score.to_dict(), allow_nan=False)


def test_axis_score_orientation_cancels() -> None:
    up = paired_effect([0, 0, 0], [1, 2, 3])
    score = axis_score([(up, True), (up, False)])
    assert score is not None
    assert score.score == pytest.approx(0.0)
    assert not score.significant


def test_axis_score_skips_unusable() -> None:
    up = paired_effect([0, 0, 0], [1, 2, 3])
    flat = paired_effect([1, 1, 1], [1, 1, 1])
    score = axis_score([(up, True), (flat, True)])
    assert score is not None and score.n_metrics == 1 and score.warnings
    assert axis_score([(flat, True)]) is None
    assert axis_score([]) is None


def _axis(low: float, high: float) -> AxisScore:
    mid = (low + high) / 2
    return AxisScore(mid, 0.1, low, high, low > 0 or high < 0, 1, 0.95)


@pytest.mark.parametrize(
    ("safety", "capability", "expected"),
    [
        (_axis(0.1, 0.5), _axis(-0.1, 0.3), "safety-leaning"),
        (_axis(-0.1, 0.5), _axis(0.2, 0.3), "capability-leaning"),
        (None, _axis(0.2, 0.3), "capability-leaning"),
        (_axis(0.1, 0.5), _axis(0.2, 0.3), "dual"),
        (_axis(-0.5, -0.1), _axis(-0.2, 0.3), "neither"),
        (_axis(-0.5, -0.1), _axis(0.2, 0.3), "capability-leaning"),  # safety significantly worse
        (None, None, "neither"),
    ],
)
def test_lean_flag(safety: AxisScore | None, capability: AxisScore | None, expected: str) -> None:
    assert lean_flag(safety, capability) == expected


# --------------------------------------------------------------------------- correlation


def test_pearson_fisher_z_known_value() -> None:
    # dx = [-2,-1,0,1,2], dy = [-1,-2,1,0,2]: r = 8/10 = 0.8; atanh(0.8) = ln 3, se = 1/sqrt(2)
    c = correlation_with_interval([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert c.r == pytest.approx(0.8)
    half = 1.959964 / math.sqrt(2)
    assert c.ci_low == pytest.approx(math.tanh(math.log(3) - half), abs=1e-6)
    assert c.ci_high == pytest.approx(math.tanh(math.log(3) + half), abs=1e-6)
    assert c.ci_low == pytest.approx(-0.27964, abs=1e-5)
    assert c.ci_high == pytest.approx(0.98620, abs=1e-5)
    ref = sps.pearsonr([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high))
    assert c.warning is None


def test_spearman_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=25)
    y = x + rng.normal(size=25)
    y[3] = y[4]  # a tie
    c = correlation_with_interval(x, y, method="spearman", confidence=0.9)
    ref = sps.spearmanr(x, y)
    assert c.r == pytest.approx(ref.statistic)
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert c.ci_low < c.r < c.ci_high
    assert c.method == "spearman"


def test_correlation_small_and_degenerate() -> None:
    c3 = correlation_with_interval([1, 2, 3], [1, 3, 2])
    assert c3.r is not None and c3.ci_low is None and c3.warning
    c2 = correlation_with_interval([1, 2], [1, 3])
    assert c2.r is None and c2.warning
    const = correlation_with_interval([1, 1, 1, 1, 1], [1, 2, 3, 4, 5])
    assert const.r is None and const.warning
    json.dumps(const.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="equal lengths"):
        correlation_with_interval([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        correlation_with_interval([1, 2, float("nan"), 4], [1, 2, 3, 4])


# --------------------------------------------------------------------------- safetywashing


def test_capabilities_correlation_monotone_single_metric() -> None:
    rng = np.random.default_rng(0)
    cap = rng.normal(size=20)
    up = capabilities_correlation(np.exp(cap), cap[:, None], n_bootstrap=200)
    assert up.r == pytest.approx(1.0)
    assert up.warning is None and up.method == "spearman"
    down = capabilities_correlation(-(cap**3), [[v] for v in cap], n_bootstrap=200)
    assert down.r == pytest.approx(-1.0)


def test_capabilities_correlation_pc1_and_dropped_columns() -> None:
    rng = np.random.default_rng(1)
    cap = rng.normal(size=15)
    # collinear columns (+ a constant one to drop): PC1 is the standardised metric itself
    matrix = np.c_[cap, 3 * cap + 1, np.full(15, 2.0), -0.5 * cap]
    c = capabilities_correlation(np.tanh(cap), matrix, n_bootstrap=200)
    assert c.r == pytest.approx(1.0)
    assert c.warning is not None and "zero-variance" in c.warning


def test_capabilities_correlation_sign_and_determinism() -> None:
    rng = np.random.default_rng(2)
    general = rng.normal(size=(40, 1))
    matrix = general * 2 + rng.normal(size=(40, 3))
    safety = general[:, 0] + 0.5 * rng.normal(size=40)
    c1 = capabilities_correlation(safety, matrix, n_bootstrap=300, rng_seed=5)
    c2 = capabilities_correlation(safety, matrix, n_bootstrap=300, rng_seed=5)
    assert c1 == c2
    assert c1.r is not None and c1.r > 0.5  # PC1 oriented with capability
    assert -1 <= c1.ci_low <= c1.r <= c1.ci_high <= 1
    flipped = capabilities_correlation(-safety, matrix, n_bootstrap=300, rng_seed=5)
    assert flipped.r == pytest.approx(-c1.r)
    json.dumps(c1.to_dict(), allow_nan=False)


def test_capabilities_correlation_warnings_and_validation() -> None:
    few = capabilities_correlation([1, 2, 3, 4, 5], [[1], [2], [3], [5], [4]], n_bootstrap=100)
    assert few.r == pytest.approx(0.9)
    assert few.warning is not None and "too few runs to trust" in few.warning
    const = capabilities_correlation([1] * 12, [[i] for i in range(12)], n_bootstrap=50)
    assert const.r is None and const.warning
    with pytest.raises(ValueError, match="one entry/row per run"):
        capabilities_correlation([1, 2, 3], [[1], [2]])
    with pytest.raises(ValueError, match="finite"):
        capabilities_correlation([1, 2, 3], [[1], [float("nan")], [3]])


# --------------------------------------------------------------------------- heterogeneity


def test_cochran_q_hand_example() -> None:
    a = paired_effect([0, 0, 0], [0, 1, 2])  # y = 1, var = 1/3, w = 3
    b = paired_effect([0, 0, 0], [2, 3, 4])  # y = 3, var = 1/3, w = 3
    h = heterogeneity([a, b])
    # pooled = 2, Q = 3*(1-2)^2 + 3*(3-2)^2 = 6, df = 1, I^2 = 5/6, se = sqrt(1/6)
    assert h.q == pytest.approx(6.0)
    assert h.df == 1
    assert h.pooled_mean == pytest.approx(2.0)
    assert h.pooled_se == pytest.approx(math.sqrt(1 / 6))
    assert h.i_squared == pytest.approx(5 / 6)
    assert h.p_value == pytest.approx(0.0143059, abs=1e-6)  # chi2.sf(6, 1)
    assert h.n_groups == 2 and h.warnings == ()


def test_heterogeneity_homogeneous_and_exclusions() -> None:
    a = paired_effect([0, 0, 0], [0, 1, 2])
    flat = paired_effect([0, 0, 0], [1, 1, 1])
    single = paired_effect([0], [5])
    h = heterogeneity([a, a, flat, single])
    assert h.q == pytest.approx(0.0) and h.i_squared == 0.0 and h.p_value == pytest.approx(1.0)
    assert h.n_groups == 2 and any("2 group(s) excluded" in w for w in h.warnings)
    none = heterogeneity([a, flat])
    assert none.q is None and none.i_squared is None and none.pooled_mean is None
    assert any("at least 2" in w for w in none.warnings)
    json.dumps(none.to_dict(), allow_nan=False)
