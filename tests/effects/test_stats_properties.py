"""Property tests (hypothesis) for registry.effects.stats: invariances a reviewer relies on.

Deterministic (``derandomize=True``) and small, so the file runs in a few seconds.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.effects.stats import EffectEstimate, axis_score, claim_verdict, paired_effect

PROPS = settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

positive = st.floats(min_value=0.01, max_value=100.0, allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, allow_infinity=False)
real = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
VALUES = {"ratio": positive, "proportion": unit, "difference": real}


@st.composite
def paired(draw: st.DrawFn, scale: str, min_n: int = 2, max_n: int = 10) -> tuple[list[float], list[float]]:
    n = draw(st.integers(min_value=min_n, max_value=max_n))
    values = VALUES[scale]
    return draw(st.lists(values, min_size=n, max_size=n)), draw(st.lists(values, min_size=n, max_size=n))


@st.composite
def scale_and_pairs(draw: st.DrawFn, min_n: int = 2) -> tuple[str, list[float], list[float]]:
    scale = draw(st.sampled_from(["ratio", "proportion", "difference"]))
    b, a = draw(paired(scale, min_n=min_n))
    return scale, b, a


def neg(x: float | None) -> float | None:
    return None if x is None else -x


def close(x: float | None, y: float | None, tol: float = 1e-9) -> bool:
    if x is None or y is None:
        return x is None and y is None
    return math.isclose(x, y, rel_tol=tol, abs_tol=tol)


CLAIMS = [
    (direction, threshold, unit, hib)
    for direction in ("increase", "decrease", "non_inferior")
    for threshold in (0.0, 0.1, 0.5, 0.9)
    for unit in ("relative", "absolute")
    for hib in (True, False)
]


# Claims a null effect must never confirm: an increase or decrease by any threshold >= 0, and
# non-inferiority with margin 0 (a zero effect *is* non-inferior within a positive margin).
NULL_CLAIMS = [c for c in CLAIMS if c[0] != "non_inferior" or c[1] == 0.0]


def verdicts(e: EffectEstimate, claims: list[tuple[str, float, str, bool]] = CLAIMS) -> list[str]:
    return [
        claim_verdict(e, direction=d, threshold=t, threshold_unit=u, higher_is_better=h)[0] for d, t, u, h in claims
    ]


# --------------------------------------------------------------------------- swapping arms


@PROPS
@given(scale_and_pairs())
def test_swapping_arms_flips_every_effect(sample: tuple[str, list[float], list[float]]) -> None:
    scale, b, a = sample
    fwd = paired_effect(b, a, scale=scale)
    rev = paired_effect(a, b, scale=scale)
    assert close(rev.effect, -fwd.effect)
    assert close(rev.mean_difference, -fwd.mean_difference)
    assert fwd.deterministic == rev.deterministic
    # (the proportion scale's clipping to [-1, 1] is symmetric)
    assert close(rev.effect_ci_low, neg(fwd.effect_ci_high)) and close(rev.effect_ci_high, neg(fwd.effect_ci_low))
    assert close(rev.p_value, fwd.p_value)
    if scale == "ratio":
        # relative changes are reciprocal ratios: (1 + r_rev) (1 + r_fwd) = 1
        assert close((1 + rev.relative_change) * (1 + fwd.relative_change), 1.0)


@PROPS
@given(paired("ratio", min_n=3), st.lists(st.booleans(), min_size=10, max_size=10))
def test_swapping_censored_arms_swaps_the_bound(sample: tuple[list[float], list[float]], flags: list[bool]) -> None:
    b, a = sample
    censored = flags[: len(b)]
    fwd = paired_effect(b, a, scale="ratio", baseline_censored=censored)
    rev = paired_effect(a, b, scale="ratio", intervention_censored=censored)
    swap = {"exact": "exact", "upper": "lower", "lower": "upper", "none": "none"}
    assert rev.censored["bound"] == swap[fwd.censored["bound"]]
    assert (rev.censored["earlier"], rev.censored["later"]) == (fwd.censored["later"], fwd.censored["earlier"])
    assert close(rev.censored["sign_test_p"], fwd.censored["sign_test_p"])
    assert close(rev.effect_ci_low, neg(fwd.effect_ci_high)) and close(rev.effect_ci_high, neg(fwd.effect_ci_low))


@st.composite
def axis_metrics(draw: st.DrawFn) -> list[tuple[str, str, bool, list[float], list[float]]]:
    n = draw(st.integers(min_value=1, max_value=8))
    k = draw(st.integers(min_value=1, max_value=3))
    out = []
    for i in range(k):
        scale = draw(st.sampled_from(["ratio", "proportion"]))  # difference metrics have no log unit
        hib = draw(st.booleans())
        values = VALUES[scale]
        b = draw(st.lists(values, min_size=n, max_size=n))
        a = draw(st.lists(values, min_size=n, max_size=n))
        out.append((f"m{i}", scale, hib, b, a))
    return out


@PROPS
@given(axis_metrics())
def test_swapping_arms_flips_every_axis_score(metrics: list) -> None:
    fwd = axis_score(metrics)
    rev = axis_score([(name, scale, hib, a, b) for name, scale, hib, b, a in metrics])
    assert close(rev.score, -fwd.score)
    assert close(rev.ci_low, neg(fwd.ci_high)) and close(rev.ci_high, neg(fwd.ci_low))
    assert rev.significant == fwd.significant and rev.deterministic == fwd.deterministic
    for name, value in fwd.components.items():
        assert close(rev.components[name], -value)


# --------------------------------------------------------------------------- scale invariance


@PROPS
@given(paired("ratio"), st.floats(min_value=1e-3, max_value=1e3, allow_nan=False))
def test_scaling_a_ratio_metric_changes_nothing(sample: tuple[list[float], list[float]], c: float) -> None:
    b, a = sample
    plain = paired_effect(b, a, scale="ratio")
    scaled = paired_effect([c * v for v in b], [c * v for v in a], scale="ratio")
    assert close(plain.effect, scaled.effect) and plain.deterministic == scaled.deterministic
    assert close(plain.effect_ci_low, scaled.effect_ci_low) and close(plain.effect_ci_high, scaled.effect_ci_high)
    assert close(plain.relative_ci_low, scaled.relative_ci_low)
    assert verdicts(plain) == verdicts(scaled)
    s1 = axis_score([("m", "ratio", False, b, a)])
    s2 = axis_score([("m", "ratio", False, [c * v for v in b], [c * v for v in a])])
    assert close(s1.score, s2.score) and close(s1.ci_low, s2.ci_low)


# --------------------------------------------------------------------------- more seeds, same effects


@PROPS
@given(axis_metrics())
def test_doubling_the_seeds_keeps_the_axis_score(metrics: list) -> None:
    once = axis_score(metrics)
    twice = axis_score([(name, scale, hib, b + b, a + a) for name, scale, hib, b, a in metrics])
    assert close(once.score, twice.score)
    assert twice.n_seeds == 2 * once.n_seeds
    assert once.components.keys() == twice.components.keys()
    if once.ci_low is not None:
        assert twice.ci_high - twice.ci_low <= once.ci_high - once.ci_low + 1e-9


# --------------------------------------------------------------------------- ratio intervals


@PROPS
@given(paired("ratio", min_n=3), st.sampled_from([0.8, 0.95, 0.99, 0.999]))
def test_ratio_relative_intervals_stay_above_minus_100_percent(
    sample: tuple[list[float], list[float]], confidence: float
) -> None:
    e = paired_effect(*sample, scale="ratio", confidence=confidence)
    assert e.relative_change > -1.0
    assert -1.0 <= e.relative_ci_low <= e.relative_change <= e.relative_ci_high
    # -100 % itself only where exp() of the log-ratio bound underflows in floating point (a ratio
    # below 1e-15: n=3 at 99.9 % confidence, t = 31.6, with a wide spread), never from the formula
    assert e.relative_ci_low > -1.0 or e.effect_ci_low < math.log(1e-15), e


# --------------------------------------------------------------------------- null data


@PROPS
@given(scale_and_pairs(min_n=1), st.integers(min_value=1, max_value=5))
def test_null_dataset_is_never_confirmed(sample: tuple[str, list[float], list[float]], min_seeds: int) -> None:
    scale, b, _ = sample
    e = paired_effect(b, list(b), scale=scale)
    assert e.effect == 0.0
    for d, t, u, h in NULL_CLAIMS:
        v, _ = claim_verdict(e, direction=d, threshold=t, threshold_unit=u, higher_is_better=h, min_seeds=min_seeds)
        assert v != "confirmed", (d, t, u, h)


@PROPS
@given(paired("ratio", min_n=3), st.lists(st.booleans(), min_size=10, max_size=10))
def test_censored_null_dataset_is_never_confirmed(sample: tuple[list[float], list[float]], flags: list[bool]) -> None:
    b, _ = sample
    censored = flags[: len(b)]
    e = paired_effect(b, list(b), scale="ratio", baseline_censored=censored, intervention_censored=censored)
    assert "confirmed" not in verdicts(e, NULL_CLAIMS)


@pytest.mark.parametrize("scale", ["ratio", "proportion", "difference"])
def test_null_with_noise_never_confirmed_at_zero_threshold_when_symmetric(scale: str) -> None:
    # a symmetric null (second half = first half with arms swapped) has mean effect exactly 0
    b = [0.2, 0.4, 0.3]
    a = [0.3, 0.2, 0.5]
    e = paired_effect(b + a, a + b, scale=scale)
    assert abs(e.effect) < 1e-12
    assert "confirmed" not in verdicts(e, NULL_CLAIMS)
