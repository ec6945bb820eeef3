"""Statistics for paired seed-level experiments: effects, claim verdicts, axis scores.

Pure functions over plain sequences; numpy and scipy only (no Django), so they can be
unit-tested in isolation and called from services, Celery tasks and scripts alike.

Conventions used throughout
---------------------------
* A run yields, per seed ``i``, a value ``b_i`` in the ``baseline`` arm and ``a_i`` in the
  ``intervention`` arm.  Same seed => paired, so everything is computed on the paired
  differences ``d_i = a_i - b_i`` (intervention minus baseline).
* ``sd`` is the sample standard deviation (``ddof=1``).
* "Relative" quantities divide a difference-scale quantity by ``|mean(b)|``, so a relative
  change of ``-0.9`` means "90 % lower than baseline" whatever the sign of the baseline.
* Results are frozen dataclasses whose ``to_dict()`` is JSON-safe: numpy scalars become
  Python floats/ints, tuples become lists and NaN/inf become ``None``.
"""

from __future__ import annotations

import math
import warnings as _warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as _st

__all__ = [
    "AxisScore",
    "Correlation",
    "EffectEstimate",
    "Heterogeneity",
    "axis_score",
    "capabilities_correlation",
    "claim_verdict",
    "corrected_confidence",
    "correlation_with_interval",
    "heterogeneity",
    "holm_bonferroni",
    "lean_flag",
    "mde_warning",
    "minimum_detectable_effect",
    "paired_effect",
]

IntervalMethod = Literal["t", "bootstrap"]
Direction = Literal["increase", "decrease", "non_inferior"]
Verdict = Literal["confirmed", "refuted", "inconclusive"]
Lean = Literal["safety-leaning", "capability-leaning", "dual", "neither"]
CorrelationMethod = Literal["pearson", "spearman"]

FloatArray = npt.NDArray[np.float64]

#: Below this many seeds a percentile bootstrap is known to under-cover; we warn.
_MIN_BOOTSTRAP_N = 10
#: Elements of the (n_bootstrap x n) resampling index drawn per chunk (bounds memory).
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------- helpers


def _json_safe(value: Any) -> Any:
    """Recursively convert ``value`` to JSON-safe Python values (NaN/inf -> None)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"cannot convert {type(value).__name__} to a JSON-safe value")


class _ToDict:
    """Mixin: ``to_dict()`` for frozen dataclasses (JSON-safe, NaN/inf -> None)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _json_safe(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def _opt_float(value: float | np.floating | None) -> float | None:
    """``float(value)`` or ``None`` when ``value`` is None or not finite."""
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _check_confidence(confidence: float, name: str = "confidence") -> None:
    if not (isinstance(confidence, (int, float)) and 0.0 < float(confidence) < 1.0):
        raise ValueError(f"{name} must be strictly between 0 and 1, got {confidence!r}")


def _as_finite_1d(values: Sequence[float], name: str) -> FloatArray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of numbers: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must contain only finite values; index {bad} is {arr[bad]!r}")
    return arr


def _paired_arrays(x: Sequence[float], y: Sequence[float], x_name: str, y_name: str) -> tuple[FloatArray, FloatArray]:
    xa = _as_finite_1d(x, x_name)
    ya = _as_finite_1d(y, y_name)
    if xa.shape[0] != ya.shape[0]:
        raise ValueError(
            f"{x_name} and {y_name} must have equal lengths (one value per seed, paired); "
            f"got {xa.shape[0]} and {ya.shape[0]}"
        )
    return xa, ya


def _sample_sd(values: FloatArray) -> float:
    """Sample SD (ddof=1); exactly 0.0 when all values are identical (avoids rounding noise).

    Computed as ``k * sd(values / k)`` with ``k = max|values|`` so huge values do not overflow.
    """
    if np.ptp(values) == 0.0:
        return 0.0
    k = float(np.max(np.abs(values)))
    return k * float(np.std(values / k, ddof=1))


def _t_p_value(mean: float, sd: float, n: int) -> float:
    """Two-sided one-sample t-test of ``mean == 0`` (== ``scipy.stats.ttest_rel`` on pairs).

    t = mean / (sd / sqrt(n)), df = n - 1, p = 2 * P(T_df > |t|).  Zero variance: p = 0.0
    if the (constant) mean is nonzero, 1.0 if it is zero.
    """
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    t = mean / (sd / math.sqrt(n))
    return float(min(1.0, 2.0 * _st.t.sf(abs(t), n - 1)))


# --------------------------------------------------------------------------- 1. effects


@dataclass(frozen=True)
class EffectEstimate(_ToDict):
    """Paired effect of the intervention on one metric (see :func:`paired_effect`)."""

    n: int
    baseline_mean: float
    intervention_mean: float
    mean_difference: float
    sd_difference: float | None
    relative_change: float | None
    ci_low: float | None
    ci_high: float | None
    relative_ci_low: float | None
    relative_ci_high: float | None
    p_value: float | None
    hedges_g: float | None
    interval: IntervalMethod
    confidence: float
    warnings: tuple[str, ...] = ()


def paired_effect(
    baseline: Sequence[float],
    intervention: Sequence[float],
    *,
    confidence: float = 0.95,
    interval: IntervalMethod = "t",
    n_bootstrap: int = 2000,
    rng_seed: int = 0,
) -> EffectEstimate:
    """Estimate the paired effect ``intervention - baseline`` over seeds.

    With ``d_i = intervention_i - baseline_i`` (i = 1..n), ``m = mean(d)``, ``s = sd(d)``
    (ddof=1), ``se = s / sqrt(n)``:

    * ``mean_difference = m``; ``relative_change = m / |mean(baseline)|`` (None if that is 0).
    * ``interval="t"``: ``m +/- t_{(1+c)/2, n-1} * se`` (Student t on the paired differences).
    * ``interval="bootstrap"``: percentile bootstrap -- resample the n differences with
      replacement ``n_bootstrap`` times (``numpy.random.default_rng(rng_seed)``), take the
      ``(1-c)/2`` and ``(1+c)/2`` quantiles (linear interpolation) of the resampled means.
      Deterministic for fixed inputs and seed; warned about when n < 10 (under-coverage).
    * ``relative_ci_* = ci_* / |mean(baseline)|`` (None if the baseline mean is 0).
    * ``p_value``: two-sided paired t-test (``scipy.stats.ttest_rel`` semantics), whichever
      interval is used.  Zero variance: 0.0 if all differences are equal and nonzero, 1.0 if
      all are zero.
    * ``hedges_g = J * d_z`` with ``d_z = m / s`` and ``J = 1 - 3 / (4 (n-1) - 1)``.  None when
      s = 0 (d_z infinite or 0/0) or n < 3 (J = 0 at n = 2: no usable small-sample correction).
    * n < 2: no sd, CI, p-value or g; the reason is recorded in ``warnings``.

    Raises ``ValueError`` for unequal lengths, empty input, non-finite values or bad options.
    """
    b, a = _paired_arrays(baseline, intervention, "baseline", "intervention")
    _check_confidence(confidence)
    if interval not in ("t", "bootstrap"):
        raise ValueError(f"interval must be 't' or 'bootstrap', got {interval!r}")
    if interval == "bootstrap" and (not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 1):
        raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")
    n = int(b.shape[0])
    if n == 0:
        raise ValueError("at least one seed is required (baseline and intervention are empty)")

    notes: list[str] = []
    d = a - b
    baseline_mean = float(np.mean(b))
    intervention_mean = float(np.mean(a))
    # Constant differences: take the value itself, so e.g. an all-zero effect is exactly 0.
    mean_diff = float(d[0]) if np.ptp(d) == 0.0 else float(np.mean(d))
    scale = abs(baseline_mean)
    if scale == 0.0:
        notes.append("baseline mean is 0: relative change and relative interval are undefined")

    def rel(x: float | None) -> float | None:
        return None if x is None or scale == 0.0 else _opt_float(x / scale)

    sd: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    g: float | None = None
    if n < 2:
        notes.append("fewer than 2 seeds: no standard deviation, confidence interval or p-value")
    else:
        sd = _sample_sd(d)
        p_value = _t_p_value(mean_diff, sd, n)
        if interval == "t":
            half = float(_st.t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
            ci_low, ci_high = mean_diff - half, mean_diff + half
        else:
            if n < _MIN_BOOTSTRAP_N:
                notes.append(f"percentile bootstrap with only {n} seeds tends to be too narrow; prefer interval='t'")
            ci_low, ci_high = _bootstrap_mean_ci(d, confidence, int(n_bootstrap), rng_seed)
        if sd == 0.0:
            notes.append("all paired differences are equal: standardised effect (Hedges' g) undefined")
        elif n < 3:
            notes.append("fewer than 3 seeds: Hedges' g undefined (small-sample correction J = 0)")
        else:
            j = 1.0 - 3.0 / (4.0 * (n - 1) - 1.0)
            g = j * mean_diff / sd

    return EffectEstimate(
        n=n,
        baseline_mean=baseline_mean,
        intervention_mean=intervention_mean,
        mean_difference=mean_diff,
        sd_difference=sd,
        relative_change=rel(mean_diff),
        ci_low=ci_low,
        ci_high=ci_high,
        relative_ci_low=rel(ci_low),
        relative_ci_high=rel(ci_high),
        p_value=p_value,
        hedges_g=_opt_float(g),
        interval=interval,
        confidence=float(confidence),
        warnings=tuple(notes),
    )


def _bootstrap_mean_ci(d: FloatArray, confidence: float, n_bootstrap: int, rng_seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval for ``mean(d)`` (resampling elements with replacement)."""
    n = d.shape[0]
    if np.ptp(d) == 0.0:  # every resample has the same mean
        return float(d[0]), float(d[0])
    rng = np.random.default_rng(rng_seed)
    rows_per_chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    means = np.empty(n_bootstrap, dtype=np.float64)
    for start in range(0, n_bootstrap, rows_per_chunk):
        stop = min(n_bootstrap, start + rows_per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


# --------------------------------------------------------------------------- 2. verdicts


def claim_verdict(
    estimate: EffectEstimate,
    *,
    direction: Direction,
    min_relative_effect: float | None = None,
    margin: float | None = None,
    higher_is_better: bool = True,
    ci: tuple[float, float] | None = None,
) -> Verdict:
    """Decide a pre-registered claim from an interval: confirmed / refuted / inconclusive.

    Works on the relative interval ``[L, H] = [ci_low, ci_high] / |baseline_mean|``.  ``ci``
    overrides the estimate's interval and is on the *difference* scale (same units as
    ``estimate.ci_low``), e.g. a multiplicity-corrected interval; the simplest way to get one
    is ``paired_effect(..., confidence=corrected_confidence(0.95, m))``.

    * ``"increase"``, ``r = min_relative_effect or 0``: confirmed if ``L > r``, refuted if
      ``H < r``, else inconclusive.
    * ``"decrease"`` (r = 0.9 means "at least 90 % lower"): threshold ``-r``; confirmed if
      ``H < -r``, refuted if ``L > -r``.
    * ``"non_inferior"``, margin ``m`` ("not worse by more than m, relative"):
      higher_is_better -> confirmed if ``L > -m``, refuted if ``H < -m``;
      lower is better  -> confirmed if ``H < +m``, refuted if ``L > +m``.

    ``higher_is_better`` only matters for ``non_inferior``; increase/decrease are literal
    directions of the metric.  All comparisons are strict, so a zero effect (degenerate
    interval [0, 0]) is never confirmed for increase/decrease with ``r >= 0``.  With a zero
    threshold the comparison is sign-only, so the absolute interval is used and a zero
    baseline mean is fine; a nonzero threshold with a zero baseline mean, or no interval
    (n < 2), gives "inconclusive".  Negative ``r``/``m`` raise ``ValueError``.
    """
    if direction not in ("increase", "decrease", "non_inferior"):
        raise ValueError(f"direction must be 'increase', 'decrease' or 'non_inferior', got {direction!r}")
    if direction == "non_inferior":
        if margin is None:
            raise ValueError("a non_inferior claim needs a margin (relative, >= 0)")
        if min_relative_effect is not None:
            raise ValueError("min_relative_effect applies to increase/decrease claims, not non_inferior")
        threshold_size = float(margin)
        what = "margin"
    else:
        if margin is not None:
            raise ValueError("margin applies to non_inferior claims only")
        threshold_size = 0.0 if min_relative_effect is None else float(min_relative_effect)
        what = "min_relative_effect"
    if not math.isfinite(threshold_size) or threshold_size < 0.0:
        raise ValueError(f"{what} must be a finite number >= 0, got {threshold_size!r}")

    if ci is not None:
        low, high = float(ci[0]), float(ci[1])
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise ValueError(f"ci must be a finite (low, high) pair with low <= high, got {ci!r}")
    elif estimate.ci_low is None or estimate.ci_high is None:
        return "inconclusive"
    else:
        low, high = estimate.ci_low, estimate.ci_high

    if threshold_size > 0.0:
        scale = abs(estimate.baseline_mean)
        if scale == 0.0:
            return "inconclusive"
        low, high = low / scale, high / scale

    if direction == "increase":
        t = threshold_size
        if low > t:
            return "confirmed"
        if high < t:
            return "refuted"
        return "inconclusive"
    if direction == "decrease":
        t = -threshold_size
        if high < t:
            return "confirmed"
        if low > t:
            return "refuted"
        return "inconclusive"
    if higher_is_better:
        t = -threshold_size
        if low > t:
            return "confirmed"
        if high < t:
            return "refuted"
        return "inconclusive"
    t = threshold_size
    if high < t:
        return "confirmed"
    if low > t:
        return "refuted"
    return "inconclusive"


# --------------------------------------------------------------------------- 3. multiplicity


def holm_bonferroni(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm (1979) step-down adjusted p-values, in input order.

    Over the m non-None p-values sorted ascending ``p_(1) <= ... <= p_(m)``:
    ``adj_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j))`` (monotone, capped at 1).
    Reject H_(i) at family-wise level alpha iff ``adj_(i) <= alpha``.  ``None`` entries pass
    through unchanged and do not count towards m.
    """
    present: list[tuple[int, float]] = []
    for i, p in enumerate(p_values):
        if p is None:
            continue
        pf = float(p)
        if not (0.0 <= pf <= 1.0):  # also rejects NaN
            raise ValueError(f"p-values must lie in [0, 1] (or be None); index {i} is {p!r}")
        present.append((i, pf))
    out: list[float | None] = [None] * len(p_values)
    m = len(present)
    running = 0.0
    for rank, (i, p) in enumerate(sorted(present, key=lambda item: item[1])):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def corrected_confidence(confidence: float, m_claims: int) -> float:
    """Bonferroni-adjusted confidence level for intervals over ``m_claims`` claims.

    ``1 - (1 - confidence) / m``.  Intervals use Bonferroni: simultaneous coverage >=
    ``confidence`` for all m intervals, conservative, and identical to Holm's first
    (strictest) step, so an interval-based verdict is never more liberal than the
    Holm-adjusted p-values reported alongside it.  P-values use Holm
    (:func:`holm_bonferroni`), which is uniformly more powerful for testing but has no
    matching simultaneous intervals.
    """
    _check_confidence(confidence)
    if not isinstance(m_claims, (int, np.integer)) or isinstance(m_claims, bool) or m_claims < 1:
        raise ValueError(f"m_claims must be a positive integer, got {m_claims!r}")
    return 1.0 - (1.0 - float(confidence)) / int(m_claims)


# --------------------------------------------------------------------------- 4. power


def minimum_detectable_effect(
    sd_difference: float | None, n: int, *, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    """Smallest true mean difference a two-sided paired t-test detects with the given power.

    Approximation: ``MDE = (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)`` (difference
    units; ignores the noncentrality of the t distribution, slightly optimistic for tiny n).
    None when n < 2 or ``sd_difference`` is None; 0.0 when sd is 0.
    """
    _check_confidence(alpha, "alpha")
    _check_confidence(power, "power")
    if sd_difference is None or n < 2:
        return None
    sd = float(sd_difference)
    if not math.isfinite(sd) or sd < 0.0:
        raise ValueError(f"sd_difference must be a finite number >= 0, got {sd_difference!r}")
    df = n - 1
    return float((_st.t.ppf(1.0 - alpha / 2.0, df) + _st.t.ppf(power, df)) * sd / math.sqrt(n))


def mde_warning(
    estimate: EffectEstimate,
    claimed_relative_effect: float | None,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> str | None:
    """Warning text when the design cannot detect the claimed effect, else None.

    Relative MDE = ``minimum_detectable_effect(sd_difference, n) / |baseline_mean|``; warns
    when it exceeds ``|claimed_relative_effect|``.  Also warns when n < 2 (MDE unknown).
    Returns None when nothing can be compared: no claimed magnitude (None or 0, i.e. a pure
    sign claim) or a zero baseline mean (relative MDE undefined).
    """
    if claimed_relative_effect is None or float(claimed_relative_effect) == 0.0:
        return None
    claimed = abs(float(claimed_relative_effect))
    if estimate.n < 2 or estimate.sd_difference is None:
        return (
            f"only {estimate.n} seed(s): the minimum detectable effect cannot be estimated, so a "
            f"claimed {claimed:.3g} relative effect cannot be tested"
        )
    scale = abs(estimate.baseline_mean)
    if scale == 0.0:
        return None
    mde = minimum_detectable_effect(estimate.sd_difference, estimate.n, alpha=alpha, power=power)
    if mde is None:
        return None
    rel_mde = mde / scale
    if rel_mde > claimed:
        return (
            f"underpowered: with n={estimate.n} seeds the minimum detectable effect "
            f"(alpha={alpha:g}, power={power:g}) is {rel_mde:.3g} relative to the baseline mean, "
            f"larger than the claimed {claimed:.3g}; add seeds or reduce variance"
        )
    return None


# --------------------------------------------------------------------------- 5. axis scores


@dataclass(frozen=True)
class AxisScore(_ToDict):
    """Mean oriented standardised effect of the metrics on one axis (see :func:`axis_score`)."""

    score: float
    se: float
    ci_low: float
    ci_high: float
    significant: bool
    n_metrics: int
    confidence: float
    components: tuple[float, ...] = ()
    warnings: tuple[str, ...] = ()


def axis_score(effects: Sequence[tuple[EffectEstimate, bool]], *, confidence: float = 0.95) -> AxisScore | None:
    """Combine per-metric effects on one axis (safety/capability/diagnostic) into one score.

    Each item is ``(estimate, higher_is_better)``.  Per metric i (with n_i seeds):
    ``g_i = s_i * hedges_g_i`` where ``s_i = +1`` if higher is better else ``-1``, so g_i > 0
    always means "better".  Standardised effects (mean difference / SD of the paired
    differences) are unit-free, so metrics in different units combine on one scale.

    * ``score = mean_i g_i`` over the k usable metrics;
    * ``SE(g_i) ~= sqrt(1/n_i + g_i^2 / (2 n_i))`` (large-sample SE of d_z, with g_i in place
      of d_z); ``SE(score) = sqrt(sum_i SE_i^2) / k``;
    * interval ``score +/- z_{(1+c)/2} * SE(score)`` (normal approximation);
      ``significant`` iff the interval excludes 0.

    Assumes the metrics' estimates are independent.  They come from the same seeds and are
    typically positively correlated, so the true SE can be larger; the interval is an
    approximation, not an exact or guaranteed-conservative one, and should be read as such.
    Metrics without a Hedges' g (n < 3 or zero variance) are skipped and listed in
    ``warnings``; returns None when no metric is usable.
    """
    _check_confidence(confidence)
    comps: list[float] = []
    ses: list[float] = []
    skipped = 0
    for estimate, higher_is_better in effects:
        if estimate.hedges_g is None:
            skipped += 1
            continue
        g = estimate.hedges_g if higher_is_better else -estimate.hedges_g
        comps.append(float(g))
        ses.append(math.sqrt(1.0 / estimate.n + g * g / (2.0 * estimate.n)))
    if not comps:
        return None
    k = len(comps)
    score = float(np.mean(comps))
    se = math.sqrt(sum(s * s for s in ses)) / k
    z = float(_st.norm.ppf(0.5 + confidence / 2.0))
    low, high = score - z * se, score + z * se
    notes: list[str] = []
    if skipped:
        notes.append(f"{skipped} metric(s) skipped: no standardised effect (fewer than 3 seeds or zero variance)")
    return AxisScore(
        score=score,
        se=se,
        ci_low=low,
        ci_high=high,
        significant=bool(low > 0.0 or high < 0.0),
        n_metrics=k,
        confidence=float(confidence),
        components=tuple(comps),
        warnings=tuple(notes),
    )


def _significant_positive(score: AxisScore | None) -> bool:
    return score is not None and score.significant and score.ci_low > 0.0


def lean_flag(safety: AxisScore | None, capability: AxisScore | None) -> Lean:
    """Classify a finding by which axes it significantly improves.

    "Significantly positive" = interval entirely above 0.  Capability yes & safety no ->
    "capability-leaning"; safety yes & capability no -> "safety-leaning"; both -> "dual";
    neither -> "neither".  A missing axis (None) counts as not significantly positive.
    """
    s, c = _significant_positive(safety), _significant_positive(capability)
    if s and c:
        return "dual"
    if c:
        return "capability-leaning"
    if s:
        return "safety-leaning"
    return "neither"


# --------------------------------------------------------------------------- 6. correlation


@dataclass(frozen=True)
class Correlation(_ToDict):
    """A correlation coefficient with its interval (see :func:`correlation_with_interval`)."""

    r: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    p_value: float | None
    warning: str | None
    method: str = "pearson"


def _corr_p_value(r: float, n: int) -> float | None:
    """Two-sided p for r = 0: ``t = r sqrt((n-2)/(1-r^2))``, df = n - 2 (as scipy's tests)."""
    if n < 3:
        return None
    if abs(r) >= 1.0:
        return 0.0
    t = r * math.sqrt((n - 2) / (1.0 - r * r))
    return float(min(1.0, 2.0 * _st.t.sf(abs(t), n - 2)))


def _fisher_interval(r: float, n: int, confidence: float, variance_factor: float) -> tuple[float, float]:
    """``tanh(atanh(r) +/- z_{(1+c)/2} * sqrt(variance_factor / (n - 3)))``."""
    if abs(r) >= 1.0:
        return r, r
    z = math.atanh(r)
    half = float(_st.norm.ppf(0.5 + confidence / 2.0)) * math.sqrt(variance_factor / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)


def _pearson(x: FloatArray, y: FloatArray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    r = float(np.dot(xc, yc) / math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc))))
    return max(-1.0, min(1.0, r))


def correlation_with_interval(
    x: Sequence[float],
    y: Sequence[float],
    *,
    method: CorrelationMethod = "pearson",
    confidence: float = 0.95,
) -> Correlation:
    """Pearson or Spearman correlation with a Fisher-z interval.

    ``z = atanh(r)``, interval ``tanh(z +/- z_{(1+c)/2} * se)`` with ``se = 1/sqrt(n-3)`` for
    Pearson and ``se = sqrt(1.06/(n-3))`` for Spearman (Fieller, Hartley & Pearson 1957).
    Spearman r is the Pearson r of average ranks.  p-value: two-sided t-test of r = 0 with
    n - 2 df (same as ``scipy.stats.pearsonr``/``spearmanr``).  n < 4: no interval (warning);
    n < 3 or a constant input: no r (warning).
    """
    xa, ya = _paired_arrays(x, y, "x", "y")
    _check_confidence(confidence)
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    n = int(xa.shape[0])
    if n < 3:
        why = f"only {n} observation(s): correlation undefined"
        return Correlation(None, None, None, n, None, why, method)
    if np.ptp(xa) == 0.0 or np.ptp(ya) == 0.0:
        return Correlation(None, None, None, n, None, "an input is constant: correlation undefined", method)
    if method == "spearman":
        xa, ya = _st.rankdata(xa), _st.rankdata(ya)
    r = _pearson(xa, ya)
    p = _corr_p_value(r, n)
    if n < 4:
        why = f"only {n} observations: no Fisher-z interval (needs n >= 4)"
        return Correlation(r, None, None, n, p, why, method)
    low, high = _fisher_interval(r, n, confidence, 1.0 if method == "pearson" else 1.06)
    return Correlation(r, low, high, n, p, None, method)


# --------------------------------------------------------------------------- 7. safetywashing


def _standardise_columns(x: FloatArray) -> FloatArray:
    """Z-score along axis -2 (runs); zero-variance columns become all zeros."""
    mu = x.mean(axis=-2, keepdims=True)
    sd = x.std(axis=-2, ddof=1, keepdims=True)
    ok = sd > 0.0
    return np.where(ok, (x - mu) / np.where(ok, sd, 1.0), 0.0)


def _pc1_scores(z: FloatArray) -> FloatArray:
    """First principal component scores of standardised ``z`` (..., runs, metrics), via SVD.

    Sign: PC1 must correlate positively with the row mean of ``z`` (mean standardised
    capability).  Ties (zero covariance) fall back to a positive loading sum, then to a
    positive largest-magnitude loading.
    """
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    v = vt[..., 0, :]  # (..., metrics)
    scores = np.einsum("...nk,...k->...n", z, v)
    # Columns of z are centred, so scores and the row mean are centred too.
    cov = np.einsum("...n,...n->...", scores, z.mean(axis=-1))
    fallback1 = v.sum(axis=-1)
    idx = np.argmax(np.abs(v), axis=-1)
    fallback2 = np.take_along_axis(v, idx[..., None], axis=-1)[..., 0]
    tol = 1e-12 * np.maximum(1.0, np.einsum("...nk,...nk->...", z, z))
    sign = np.where(
        np.abs(cov) > tol,
        np.sign(cov),
        np.where(np.abs(fallback1) > 1e-12, np.sign(fallback1), np.sign(fallback2)),
    )
    sign = np.where(sign == 0.0, 1.0, sign)
    return scores * sign[..., None]


def _rowwise_spearman(a: FloatArray, b: FloatArray) -> FloatArray:
    """Spearman r per row of 2-D arrays (NaN where a row is constant)."""
    ra = _st.rankdata(a, axis=-1)
    rb = _st.rankdata(b, axis=-1)
    ra = ra - ra.mean(axis=-1, keepdims=True)
    rb = rb - rb.mean(axis=-1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=-1) * (rb * rb).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0.0, (ra * rb).sum(axis=-1) / np.where(den > 0.0, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


def capabilities_correlation(
    safety_values: Sequence[float],
    capability_matrix: Sequence[Sequence[float]],
    *,
    n_bootstrap: int = 1000,
    rng_seed: int = 0,
    min_runs: int = 10,
    confidence: float = 0.95,
) -> Correlation:
    """How much a safety metric just tracks general capability (Ren et al. 2024, "Safetywashing").

    Rows are runs (models/checkpoints), columns capability metrics.

    1. Z-score each capability column (ddof=1); drop zero-variance columns.
    2. Capabilities score = first principal component scores of the standardised matrix
       (SVD; equals the standardised column itself when there is a single metric), sign
       fixed so that PC1 correlates positively with the mean standardised capability.
    3. ``r`` = Spearman correlation of the safety values with the capabilities score;
       p-value from the t approximation (n - 2 df).
    4. Interval: percentile bootstrap over runs (``n_bootstrap`` resamples of the rows with
       replacement, ``numpy.random.default_rng(rng_seed)``), re-running steps 1-3 in every
       resample (columns constant within a resample contribute zeros; resamples with a
       constant safety or PC1 vector are discarded and counted in the warning).

    Warns when runs < ``min_runs`` ("too few runs to trust").  r is None (with a warning)
    when runs < 3, every capability column is constant, or the safety values are constant.
    """
    s = _as_finite_1d(safety_values, "safety_values")
    try:
        x = np.asarray(capability_matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"capability_matrix must be a runs x metrics matrix of numbers: {exc}") from exc
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"capability_matrix must be runs x metrics (2-D, >= 1 column), got shape {x.shape}")
    if x.shape[0] != s.shape[0]:
        raise ValueError(
            f"safety_values and capability_matrix must have one entry/row per run; got {s.shape[0]} and {x.shape[0]}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("capability_matrix must contain only finite values")
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")
    _check_confidence(confidence)

    n = int(s.shape[0])
    notes: list[str] = []
    if n < min_runs:
        notes.append(f"too few runs to trust: {n} run(s), at least {min_runs} recommended")

    def result(r: float | None, low: float | None, high: float | None, p: float | None) -> Correlation:
        return Correlation(r, low, high, n, p, "; ".join(notes) or None, "spearman")

    if n < 3:
        notes.append("fewer than 3 runs: correlation undefined")
        return result(None, None, None, None)
    keep = x.std(axis=0) > 0.0
    if not np.any(keep):
        notes.append("every capability metric is constant across runs: no capabilities component")
        return result(None, None, None, None)
    if not np.all(keep):
        notes.append(f"dropped {int((~keep).sum())} zero-variance capability column(s)")
    x = x[:, keep]
    if np.ptp(s) == 0.0:
        notes.append("safety values are constant across runs: correlation undefined")
        return result(None, None, None, None)

    pc1 = _pc1_scores(_standardise_columns(x))
    r = float(_rowwise_spearman(s[None, :], pc1[None, :])[0])
    if not math.isfinite(r):
        notes.append("capabilities component is constant across runs: correlation undefined")
        return result(None, None, None, None)

    rng = np.random.default_rng(rng_seed)
    rows_per_chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // (n * (x.shape[1] + 1)))
    boot = np.empty(n_bootstrap, dtype=np.float64)
    for start in range(0, n_bootstrap, rows_per_chunk):
        stop = min(n_bootstrap, start + rows_per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        boot[start:stop] = _rowwise_spearman(s[idx], _pc1_scores(_standardise_columns(x[idx])))
    valid = boot[np.isfinite(boot)]
    if valid.size < n_bootstrap:
        notes.append(f"{n_bootstrap - valid.size} of {n_bootstrap} bootstrap resamples were degenerate")
    low: float | None = None
    high: float | None = None
    if valid.size >= 2:
        alpha = 1.0 - confidence
        lo, hi = np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0])
        low, high = float(lo), float(hi)
    else:
        notes.append("too few usable bootstrap resamples for an interval")
    return result(r, low, high, _corr_p_value(r, n))


# --------------------------------------------------------------------------- 8. heterogeneity


@dataclass(frozen=True)
class Heterogeneity(_ToDict):
    """Cochran's Q across groups' mean differences (see :func:`heterogeneity`)."""

    q: float | None
    df: int | None
    p_value: float | None
    i_squared: float | None
    pooled_mean: float | None
    pooled_se: float | None
    n_groups: int
    warnings: tuple[str, ...] = ()


def heterogeneity(groups: Sequence[EffectEstimate]) -> Heterogeneity:
    """Between-group heterogeneity of the paired mean difference (fixed-effect model).

    Group i: ``y_i = mean_difference``, ``v_i = sd_difference^2 / n_i``, ``w_i = 1 / v_i``.
    ``pooled_mean = sum w_i y_i / sum w_i``, ``pooled_se = sqrt(1 / sum w_i)``,
    ``Q = sum w_i (y_i - pooled_mean)^2`` with ``df = k - 1``, ``p = P(chi2_df > Q)``,
    ``I^2 = max(0, (Q - df) / Q)`` (0 when Q = 0).  Groups with n < 2 or zero variance
    have no finite weight and are excluded (noted in ``warnings``); fewer than 2 usable
    groups gives None statistics and a warning.
    """
    notes: list[str] = []
    ys: list[float] = []
    ws: list[float] = []
    excluded = 0
    for est in groups:
        if est.n < 2 or est.sd_difference is None or est.sd_difference == 0.0:
            excluded += 1
            continue
        ys.append(est.mean_difference)
        ws.append(est.n / est.sd_difference**2)
    if excluded:
        notes.append(f"{excluded} group(s) excluded: fewer than 2 seeds or zero variance")
    k = len(ys)
    if k < 2:
        notes.append(f"only {k} usable group(s): heterogeneity needs at least 2")
        return Heterogeneity(None, None, None, None, None, None, k, tuple(notes))
    y = np.asarray(ys)
    w = np.asarray(ws)
    sw = float(w.sum())
    pooled = float((w * y).sum() / sw)
    q = float((w * (y - pooled) ** 2).sum())
    df = k - 1
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)
        p = float(_st.chi2.sf(q, df))
    i2 = max(0.0, (q - df) / q) if q > 0.0 else 0.0
    return Heterogeneity(q, df, p, i2, pooled, math.sqrt(1.0 / sw), k, tuple(notes))
