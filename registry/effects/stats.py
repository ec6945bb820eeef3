"""Statistics for paired seed-level experiments: effects, claim verdicts, axis scores, trends.

Pure functions over plain sequences; numpy and scipy only (no Django), so they can be
unit-tested in isolation and called from services, Celery tasks and scripts alike.
``docs/statistics.md`` is the reviewer's page; every rule there has its formula here.

Conventions used throughout
---------------------------
* A run yields, per seed ``i``, a value ``b_i`` in the ``baseline`` arm and ``a_i`` in the
  ``intervention`` arm.  Same seed => paired: every effect is computed from per-seed effects
  ``e_i`` (intervention against baseline) on the metric's *scale*:

  - ``ratio`` (strictly positive: energies, losses, MSE, step counts): ``e_i = ln(a_i / b_i)``;
  - ``proportion`` (bounded in [0, 1]): ``e_i = a_i - b_i`` in fraction units (0.3 = 30 points);
  - ``difference`` (unbounded): ``e_i = a_i - b_i``.

* ``sd`` is the sample standard deviation of the ``e_i`` (``ddof=1``); intervals are Student t
  intervals ``mean(e) +/- t_{(1+c)/2, n-1} sd / sqrt(n)`` at two-sided confidence ``c``; p-values
  are the two-sided one-sample t-test of ``mean(e) = 0`` (``scipy.stats.ttest_1samp`` on the
  ``e_i``, i.e. ``ttest_rel`` on the pairs for differences).
* "Zero variance" means every ``e_i`` is equal up to floating-point rounding (a spread of at most
  64 machine epsilons of the inputs' magnitude): the effect is then reported as *deterministic*
  (degenerate interval ``[e, e]``, no p-value) rather than as ``p = 0``.
* Results are frozen dataclasses whose ``to_dict()`` is JSON-safe: numpy scalars become
  Python floats/ints, tuples become lists and NaN/inf become ``None``.
"""

from __future__ import annotations

import itertools
import math
import warnings as _warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import special as _special


class _LazyScipyStats:
    """``scipy.stats``, imported at first use: it costs a second at import, and most processes
    that import this module (a worker's start, a run's parent) never call it."""

    def __getattr__(self, name: str) -> Any:
        from scipy import stats

        return getattr(stats, name)


_st: Any = _LazyScipyStats()

__all__ = [
    "AxisMetric",
    "AxisScore",
    "Correlation",
    "DifferentialProgress",
    "EffectEstimate",
    "Heterogeneity",
    "ProgressPoint",
    "absolute_claim_problem",
    "axis_score",
    "capabilities_correlation",
    "claim_verdict",
    "corrected_confidence",
    "correlation_with_interval",
    "differential_progress",
    "heterogeneity",
    "holm_bonferroni",
    "lean_flag",
    "mde_warning",
    "minimum_detectable_effect",
    "paired_effect",
    "relative_claim_problem",
]

ScaleName = Literal["ratio", "proportion", "difference"]
ThresholdUnit = Literal["relative", "absolute"]
Direction = Literal["increase", "decrease", "non_inferior"]
Verdict = Literal["confirmed", "refuted", "inconclusive"]
Bound = Literal["exact", "upper", "lower", "none"]
Lean = Literal["safety-leaning", "capability-leaning", "dual", "neither"]
CorrelationMethod = Literal["pearson", "spearman"]

FloatArray = npt.NDArray[np.float64]

#: Relative changes on a proportion are allowed only when every baseline value is at least this.
MIN_PROPORTION_BASELINE = 0.05
#: Proportions are clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP] before the logit in axis scores.
LOGIT_CLIP = 0.01
#: Exact permutation p-values (all n! orderings) up to this many observations.
MAX_EXACT_PERMUTATION_N = 8
#: Fieller, Hartley & Pearson's Spearman variance 1.06/(n-3) was validated from this n on.
MIN_SPEARMAN_INTERVAL_N = 10
#: Elements of a (resamples x n) bootstrap index drawn per chunk (bounds memory).
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000
_EPS = float(np.finfo(np.float64).eps)


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
    if isinstance(confidence, bool) or not (
        isinstance(confidence, (int, float, np.floating)) and 0.0 < float(confidence) < 1.0
    ):
        raise ValueError(f"{name} must be strictly between 0 and 1, got {confidence!r}")


def _scale_name(scale: Any) -> ScaleName:
    """Accept ``"ratio"`` etc. or the SDK's ``Scale`` StrEnum."""
    name = str(getattr(scale, "value", scale))
    if name not in ("ratio", "proportion", "difference"):
        raise ValueError(f"scale must be 'ratio', 'proportion' or 'difference', got {scale!r}")
    return name  # type: ignore[return-value]


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


def _flags(flags: Sequence[bool] | None, n: int, name: str) -> npt.NDArray[np.bool_]:
    if flags is None:
        return np.zeros(n, dtype=bool)
    arr = np.asarray(flags, dtype=bool)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have one flag per seed ({n}), got shape {arr.shape}")
    return arr


def _rounding(magnitude: float) -> float:
    """Floating-point rounding allowance for quantities computed from inputs of this magnitude."""
    return 64.0 * _EPS * magnitude


def _is_constant(values: FloatArray, magnitude: float) -> bool:
    """All values equal up to floating-point rounding (spread <= 64 eps * magnitude)."""
    if values.size == 0:
        return True
    return float(np.ptp(values)) <= _rounding(magnitude)


def _sample_sd(values: FloatArray) -> float:
    """Sample SD (ddof=1), computed as ``k * sd(values / k)`` with ``k = max|values|`` (no overflow)."""
    k = float(np.max(np.abs(values)))
    if k == 0.0:
        return 0.0
    v = values / k
    dev = v - v.sum() / v.shape[0]
    return k * math.sqrt(float(dev @ dev) / (v.shape[0] - 1))


def _t_quantile(confidence: float, df: int) -> float:
    """``t_{(1+c)/2, df}`` (``scipy.special.stdtrit``, the same quantile as ``scipy.stats.t.ppf``)."""
    return float(_special.stdtrit(df, 0.5 + confidence / 2.0))


def _t_p_value(mean: float, sd: float, n: int) -> float:
    """Two-sided one-sample t-test of ``mean == 0``: t = mean / (sd / sqrt(n)), df = n - 1,
    ``p = 2 P(T_df > |t|)`` (``scipy.special.stdtr``, as ``scipy.stats.t.sf``)."""
    t = mean / (sd / math.sqrt(n))
    return float(min(1.0, 2.0 * _special.stdtr(n - 1, -abs(t))))


@dataclass(frozen=True)
class _Summary:
    """Mean, SD, t interval and p-value of per-seed effects (deterministic: zero variance)."""

    n: int
    mean: float
    sd: float | None
    low: float | None
    high: float | None
    p_value: float | None
    deterministic: bool


def _summarise(e: FloatArray, confidence: float, magnitude: float) -> _Summary:
    """t summary of per-seed effects ``e`` (see the module docstring); ``magnitude`` is the scale
    of the inputs the ``e`` were computed from, for the rounding allowance."""
    n = int(e.shape[0])
    if n == 0:
        return _Summary(0, math.nan, None, None, None, None, False)
    if n >= 2 and _is_constant(e, magnitude):
        value = float(np.mean(e))
        if abs(value) <= _rounding(magnitude):  # a rounding-level constant effect is exactly 0
            value = 0.0
        return _Summary(n, value, 0.0, value, value, None, True)
    mean = float(np.mean(e))
    if n < 2:
        return _Summary(n, mean, None, None, None, None, False)
    sd = _sample_sd(e)
    half = _t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return _Summary(n, mean, sd, mean - half, mean + half, _t_p_value(mean, sd, n), False)


# --------------------------------------------------------------------------- 1. effects


@dataclass(frozen=True)
class EffectEstimate(_ToDict):
    """Paired effect of the intervention on one metric (see :func:`paired_effect`).

    ``effect`` and its interval are in ``effect_unit``: ``"log_ratio"`` (ratio scale: mean of
    ``ln(a_i/b_i)``), ``"points"`` (proportion scale: mean of ``a_i - b_i`` as a fraction, 0.3 =
    30 points) or ``"difference"`` (metric units).  ``relative_*`` are fractions of the
    baseline (``-0.9`` = 90 % lower) and exist only on the ratio scale and on proportions whose
    baseline values are all >= 0.05.  ``censored`` is None without censoring flags, else a dict
    with ``reached_baseline, reached_intervention, n, earlier, later, undecidable, sign_test_p,
    bound``; ``bound`` says which side of the interval is valid (``"exact"``: both,
    ``"upper"``: only the high side, ``"lower"``: only the low side, ``"none"``: neither; the
    invalid side is None).
    """

    n: int
    scale: str
    baseline_mean: float | None
    intervention_mean: float | None
    mean_difference: float | None
    effect: float | None
    effect_ci_low: float | None
    effect_ci_high: float | None
    effect_unit: str
    sd: float | None
    relative_change: float | None
    relative_ci_low: float | None
    relative_ci_high: float | None
    p_value: float | None
    deterministic: bool
    censored: dict[str, Any] | None
    confidence: float
    warnings: tuple[str, ...] = ()

    @property
    def bound(self) -> Bound:
        """Which side(s) of the interval are valid (``"exact"`` without censoring)."""
        return "exact" if self.censored is None else self.censored["bound"]


_EFFECT_UNITS: dict[str, str] = {"ratio": "log_ratio", "proportion": "points", "difference": "difference"}


def _expm1(x: float | None) -> float | None:
    if x is None:
        return None
    try:
        return _opt_float(math.expm1(x))
    except OverflowError:  # a ratio beyond e^709: no finite percentage
        return None


def paired_effect(
    baseline: Sequence[float],
    intervention: Sequence[float],
    *,
    scale: ScaleName,
    confidence: float = 0.95,
    baseline_censored: Sequence[bool] | None = None,
    intervention_censored: Sequence[bool] | None = None,
) -> EffectEstimate:
    """Estimate the paired effect of the intervention over n seeds on the metric's scale.

    **ratio** (values must be > 0, else ``ValueError``): ``l_i = ln(a_i / b_i)``;
    ``effect = mean(l)`` (the log of the geometric mean ratio), t interval on ``l``;
    ``relative_change = exp(mean l) - 1`` and ``relative_ci = exp(bounds) - 1``, so a relative
    change can never pass -100 %.  Invariant under multiplying both arms by a constant.

    **proportion** (values in [0, 1]): ``d_i = a_i - b_i``; ``effect = mean(d)`` in points
    (fractions), t interval on ``d`` clipped to the feasible range [-1, 1].  Relative change only
    when every baseline value is >= 0.05 (and every intervention value > 0), computed as in the
    ratio case on the values (geometric mean ratio of ``a_i / b_i``); otherwise None with a
    warning saying why (near 0 a ratio explodes: 0.001 -> 0.8 is +79,900 %).

    **difference**: ``d_i = a_i - b_i``; effect = mean(d), t interval; no relative change.

    Always: ``mean_difference = mean(a - b)`` in metric units, ``sd = sd(e)``, ``p_value`` =
    two-sided one-sample t-test of ``mean(e) = 0``.  Zero variance with n >= 2:
    ``deterministic=True``, interval ``[e, e]``, ``p_value=None`` (never p = 0).  n < 2: no sd,
    interval or p-value (warning).

    **Censoring** (time-to-event metrics, ratio scale only; ``ValueError`` otherwise): a censored
    value is the budget, a lower bound on the event time.  Each pair is *exact* (neither
    censored), an *upper bound* on ``l_i`` (only the baseline censored: the true baseline time
    is longer, so the true log ratio is smaller), a *lower bound* (only the intervention
    censored) or *unknown* (both).  Reported: seeds that reached the event per arm; an exact
    two-sided sign test (``scipy.stats.binomtest(earlier, earlier + later, 0.5)``) of pairs where
    the intervention reached the event earlier vs later, among decidable pairs (exact pairs with
    ``a != b``; baseline-censored pairs with ``a < budget`` are "earlier"; intervention-censored
    pairs with ``b < budget`` are "later"; ties, unknown pairs and the rest are undecidable); and
    ``bound``: ``"exact"`` if no pair is censored, ``"upper"`` if every inexact pair is an upper
    bound, ``"lower"`` symmetrically, ``"none"`` if any pair is unknown or both kinds occur.
    Why one side stays valid: the recorded log ratios are i.i.d. over seeds (censoring at a fixed
    budget is a function of the pair), so the t interval covers ``E[l_recorded]``; with only
    upper-bound pairs ``E[l_recorded] >= E[l_true]``, so the recorded upper limit is a valid
    (conservative) upper confidence limit for the true effect ("at most X %"), while the lower
    limit is not.  The invalid side(s) of the effect and relative intervals are set to None.
    With censoring (``bound != "exact"``) ``p_value`` is the sign test's p-value (the test that
    is valid for censored pairs when both arms share the budget).
    """
    b, a = _paired_arrays(baseline, intervention, "baseline", "intervention")
    _check_confidence(confidence)
    kind = _scale_name(scale)
    n = int(b.shape[0])
    if n == 0:
        raise ValueError("at least one seed is required (baseline and intervention are empty)")
    has_flags = baseline_censored is not None or intervention_censored is not None
    b_cens = _flags(baseline_censored, n, "baseline_censored")
    a_cens = _flags(intervention_censored, n, "intervention_censored")
    if has_flags and kind != "ratio":
        raise ValueError("censored values are only valid on the ratio scale (time-to-event metrics)")

    notes: list[str] = []
    baseline_mean = float(np.mean(b))
    intervention_mean = float(np.mean(a))
    mean_difference = float(np.mean(a - b))
    magnitude = float(max(np.max(np.abs(a)), np.max(np.abs(b))))

    relative: tuple[float | None, float | None, float | None] = (None, None, None)
    if kind == "ratio":
        if np.any(a <= 0.0) or np.any(b <= 0.0):
            raise ValueError("ratio-scale values must be strictly positive (the effect is a log ratio)")
        e = np.log(a / b)
        s = _summarise(e, confidence, max(1.0, float(np.max(np.abs(e)))))
        relative = (_expm1(s.mean), _expm1(s.low), _expm1(s.high))
    else:
        e = a - b
        s = _summarise(e, confidence, magnitude)
        if kind == "proportion":
            if np.any(a < 0.0) or np.any(a > 1.0) or np.any(b < 0.0) or np.any(b > 1.0):
                raise ValueError("proportion-scale values must lie in [0, 1]")
            if s.low is not None and s.high is not None:
                # A difference of proportions lies in [-1, 1]. (Clipping to [-mean(b), 1 - mean(b)]
                # would treat the baseline's sample mean as exactly known, and break the symmetry
                # of swapping the arms.)
                s = _Summary(s.n, s.mean, s.sd, max(-1.0, s.low), min(1.0, s.high), s.p_value, s.deterministic)
            if float(np.min(b)) < MIN_PROPORTION_BASELINE:
                notes.append(
                    f"no relative change: a baseline value ({float(np.min(b)):.3g}) is below "
                    f"{MIN_PROPORTION_BASELINE:g}, where a ratio is dominated by noise near 0; the effect is "
                    "reported in points (absolute difference)"
                )
            elif np.any(a <= 0.0):
                notes.append("no relative change: an intervention value is 0 (log ratio undefined)")
            else:
                lr = np.log(a / b)
                sr = _summarise(lr, confidence, max(1.0, float(np.max(np.abs(lr)))))
                relative = (_expm1(sr.mean), _expm1(sr.low), _expm1(sr.high))
    if n < 2:
        notes.append("fewer than 2 seeds: no standard deviation, confidence interval or p-value")
    if s.deterministic:
        notes.append(
            "deterministic: every seed gives the same effect (zero variance); the interval is the point "
            "and no p-value is given"
        )

    low, high, p_value = s.low, s.high, s.p_value
    point: float | None = float(s.mean)
    rel_change, rel_low, rel_high = relative
    censored: dict[str, Any] | None = None
    if has_flags:
        censored, bound_notes = _censoring(a, b, a_cens, b_cens)
        notes.extend(bound_notes)
        bound = censored["bound"]
        if bound != "exact":
            # Never averaged as numbers: a censored value is a bound, not a time.
            point = None
            rel_change = None
            mean_difference = None
            if np.any(b_cens):
                baseline_mean = None
            if np.any(a_cens):
                intervention_mean = None
            p_value = censored["sign_test_p"]
            if bound in ("lower", "none"):
                high, rel_high = None, None
            if bound in ("upper", "none"):
                low, rel_low = None, None

    return EffectEstimate(
        n=n,
        scale=kind,
        baseline_mean=baseline_mean,
        intervention_mean=intervention_mean,
        mean_difference=mean_difference,
        effect=point,
        effect_ci_low=_opt_float(low),
        effect_ci_high=_opt_float(high),
        effect_unit=_EFFECT_UNITS[kind],
        sd=_opt_float(s.sd),
        relative_change=rel_change,
        relative_ci_low=rel_low,
        relative_ci_high=rel_high,
        p_value=_opt_float(p_value),
        deterministic=s.deterministic,
        censored=censored,
        confidence=float(confidence),
        warnings=tuple(notes),
    )


def _sign_test_p(k: int, m: int) -> float:
    """Exact two-sided sign test: ``min(1, 2 P(X <= min(k, m - k)))``, X ~ Binomial(m, 1/2).

    Equal to ``scipy.stats.binomtest(k, m, 0.5).pvalue`` (symmetric null), computed with
    ``scipy.special.bdtr`` because it is called in tight loops.
    """
    return float(min(1.0, 2.0 * _special.bdtr(min(k, m - k), m, 0.5)))


def _censoring(
    a: FloatArray, b: FloatArray, a_cens: npt.NDArray[np.bool_], b_cens: npt.NDArray[np.bool_]
) -> tuple[dict[str, Any], list[str]]:
    """Classify censored pairs, count decidable ones, sign test (see :func:`paired_effect`)."""
    exact = ~a_cens & ~b_cens
    upper = b_cens & ~a_cens  # baseline censored: true l <= recorded l
    lower = a_cens & ~b_cens  # intervention censored: true l >= recorded l
    unknown = a_cens & b_cens
    earlier = int(np.sum(exact & (a < b)) + np.sum(upper & (a < b)))
    later = int(np.sum(exact & (a > b)) + np.sum(lower & (a > b)))
    n = int(a.shape[0])
    decidable = earlier + later
    sign_p = _sign_test_p(earlier, decidable) if decidable else None
    if not np.any(~exact):
        bound: Bound = "exact"
    elif np.any(unknown) or (np.any(upper) and np.any(lower)):
        bound = "none"
    elif np.any(upper):
        bound = "upper"
    else:
        bound = "lower"
    notes: list[str] = []
    n_b, n_a = int(b_cens.sum()), int(a_cens.sum())
    if bound != "exact":
        notes.append(
            f"censored: {n - n_b} of {n} baseline and {n - n_a} of {n} intervention seeds reached the event "
            "within the budget; censored values are lower bounds on the event time and are not averaged as values"
        )
    if bound == "upper":
        notes.append("only the upper end of the interval is valid (the true effect is at most the one shown)")
    elif bound == "lower":
        notes.append("only the lower end of the interval is valid (the true effect is at least the one shown)")
    elif bound == "none":
        notes.append(
            "no side of the interval is valid (some seeds censored in both arms, or censoring in both "
            "directions); only the sign test can be used"
        )
    if decidable == 0:
        notes.append("no decidable pair: the sign test is undefined")
    info = {
        "reached_baseline": n - n_b,
        "reached_intervention": n - n_a,
        "n": n,
        "earlier": earlier,
        "later": later,
        "undecidable": n - decidable,
        "sign_test_p": sign_p,
        "bound": bound,
    }
    return info, notes


# --------------------------------------------------------------------------- 2. verdicts


def relative_claim_problem(scale: ScaleName, baseline_values: Sequence[float] | None) -> str | None:
    """Why a relative claim is not allowed on this metric, and what to claim instead; None if allowed.

    * ratio: always allowed (compared on the log scale, so -100 % is never passed).
    * difference: never (no natural zero: a ratio of differences or log-likelihoods is
      meaningless); claim an absolute change in the metric's units.
    * proportion: allowed only when every baseline value is >= 0.05 (near 0 a relative change is
      dominated by noise: 0.001 -> 0.8 is +79,900 %); otherwise claim an absolute change in
      points.  With no baseline values yet (``None`` or empty) it is refused too: nothing shows
      the baseline is away from 0.
    """
    kind = _scale_name(scale)
    if kind == "ratio":
        return None
    if kind == "difference":
        return (
            "relative claims are not allowed on a difference-scale metric (its values have no natural zero, "
            "so a percentage of the baseline is meaningless); claim an absolute change in the metric's units "
            "instead (threshold_unit='absolute')"
        )
    if baseline_values is None or len(baseline_values) == 0:
        return (
            f"relative claims on a proportion need a measured baseline with every value >= "
            f"{MIN_PROPORTION_BASELINE:g} (near 0 a percentage change is dominated by noise: 0.001 -> 0.8 is "
            "+79,900%), and none is measured yet; claim an absolute change in points instead "
            "(threshold_unit='absolute', e.g. 0.3 = 30 points), or claim the relative change once a "
            "reproduction shows the baseline"
        )
    low = min(float(v) for v in baseline_values)
    if low < MIN_PROPORTION_BASELINE:
        return (
            f"relative claims on a proportion need every baseline value >= {MIN_PROPORTION_BASELINE:g}, but one is "
            f"{low:.3g}: near 0 a percentage change is dominated by noise (0.001 -> 0.8 is +79,900%); claim an "
            "absolute change in points instead (threshold_unit='absolute', e.g. 0.3 = 30 points)"
        )
    return None


def absolute_claim_problem(scale: ScaleName) -> str | None:
    """Why an absolute claim is not allowed on this metric, and what to claim instead; None if allowed.

    Ratio-scale metrics are compared on the log scale (their effect is a log ratio, invariant to
    the metric's unit), so they take relative claims only; proportions and difference-scale
    metrics take absolute claims (points as fractions for proportions).
    """
    if _scale_name(scale) == "ratio":
        return (
            "absolute claims are not allowed on a ratio-scale metric (strictly positive values are compared as "
            "ratios on the log scale); claim a relative change instead (threshold_unit='relative', e.g. 0.9 = 90%)"
        )
    return None


#: Relative tolerance under which an interval end counts as touching the threshold (rounding).
_TIE_EPS = 64 * float(np.finfo(np.float64).eps)


def deterministic_min_seeds(confidence: float) -> int:
    """Seeds a zero-variance effect needs before it can decide a claim.

    With every seed giving the same effect the t interval degenerates; the test that stays exact
    for any metric (discrete ones included) is the sign test: all n seeds beyond the threshold
    has one-sided p = 2^-n under a null symmetric about the threshold. It must not exceed the
    one-sided level (1 - confidence) / 2 of the interval it replaces: n >= log2(2 / (1 - confidence)).
    """
    return max(1, math.ceil(math.log2(2.0 / (1.0 - confidence)) - 1e-12))


def _decide(
    low: float | None, high: float | None, threshold: float, *, confirm_above: bool, what: str
) -> tuple[Verdict, str | None]:
    """Strict interval-vs-threshold decision.

    ``confirm_above``: confirmed iff ``low > threshold``, refuted iff ``high < threshold``;
    otherwise confirmed iff ``high < threshold``, refuted iff ``low > threshold``.  A missing
    side (censored data) is never used.
    """
    confirm_side, refute_side = (low, high) if confirm_above else (high, low)

    def beyond(bound: float, above: bool) -> bool:
        # An interval end that equals the threshold up to rounding touches it: no decision.
        tolerance = _TIE_EPS * max(1.0, abs(threshold), abs(bound))
        return bound > threshold + tolerance if above else bound < threshold - tolerance

    if confirm_side is not None and beyond(confirm_side, confirm_above):
        return "confirmed", None
    if refute_side is not None and beyond(refute_side, not confirm_above):
        return "refuted", None
    if confirm_side is None or refute_side is None:
        missing = "lower" if low is None else "upper"
        return "inconclusive", (
            f"censored data: the {missing} end of the interval is not valid, and the valid side does not decide "
            f"the claim ({what} {threshold:.4g})"
        )
    return "inconclusive", f"the interval [{low:.4g}, {high:.4g}] contains the threshold ({what} {threshold:.4g})"


def claim_verdict(
    estimate: EffectEstimate,
    *,
    direction: Direction,
    threshold: float,
    threshold_unit: ThresholdUnit,
    higher_is_better: bool,
    min_seeds: int = 3,
) -> tuple[Verdict, str | None]:
    """Decide a pre-registered claim from the estimate's interval: (verdict, reason).

    The reason is None for confirmed/refuted and says why for inconclusive (including invalid
    claims, which can never be decided: they are reported as inconclusive with a reason
    starting "invalid claim").  Rules:

    * ``estimate.n < min_seeds``: inconclusive.  No interval (n < 2): inconclusive.
    * ``threshold_unit="relative"`` (fraction of the baseline), compared on the log-ratio
      interval ``[L, H]`` (ratio scale: the effect interval; proportion: ``ln(1 + relative
      bounds)``, only when the relative change is defined; difference scale: inconclusive,
      relative claims are meaningless there):

      - ``increase`` r: ``T = ln(1 + r)``; confirmed iff ``L > T``, refuted iff ``H < T``;
      - ``decrease`` r (0.9 = at least 90 % lower; r >= 1 is invalid): ``T = ln(1 - r)``;
        confirmed iff ``H < T``, refuted iff ``L > T``;
      - ``non_inferior`` margin m: higher-is-better: ``T = ln(1 - m)`` (m >= 1 invalid),
        confirmed iff ``L > T``, refuted iff ``H < T``; lower-is-better: ``T = ln(1 + m)``,
        confirmed iff ``H < T``, refuted iff ``L > T``.

    * ``threshold_unit="absolute"`` (metric units; points as fractions for proportions), on the
      difference interval (the effect interval on the proportion and difference scales):
      ``increase`` r: ``T = r``; ``decrease`` r: ``T = -r``; ``non_inferior`` m: ``T = -m``
      (higher is better) or ``+m`` (lower is better); same comparisons as above.  Absolute
      claims on a ratio-scale metric are inconclusive with a reason: its effect is a log ratio
      (claim a relative change instead).

    All comparisons are strict: a zero effect (interval [0, 0]) is never confirmed for a
    threshold >= 0.  ``higher_is_better`` only matters for ``non_inferior``.  Censored
    estimates: only the side(s) allowed by ``bound`` are used (``"upper"``: only ``H``, so a
    decrease can be confirmed and an increase refuted; ``"lower"``: only ``L``; ``"none"``:
    nothing), otherwise inconclusive with a reason.  Negative thresholds are invalid.
    """
    if direction not in ("increase", "decrease", "non_inferior"):
        raise ValueError(f"direction must be 'increase', 'decrease' or 'non_inferior', got {direction!r}")
    if threshold_unit not in ("relative", "absolute"):
        raise ValueError(f"threshold_unit must be 'relative' or 'absolute', got {threshold_unit!r}")
    r = float(threshold)
    if not math.isfinite(r) or r < 0.0:
        return "inconclusive", f"invalid claim: the threshold must be a finite number >= 0, got {threshold!r}"
    if estimate.n < min_seeds:
        return "inconclusive", (
            f"only {estimate.n} seed(s): at least {min_seeds} are needed for a verdict (the registry's minimum)"
        )
    if estimate.deterministic and estimate.n < deterministic_min_seeds(estimate.confidence):
        needed = deterministic_min_seeds(estimate.confidence)
        return "inconclusive", (
            f"deterministic effect (every seed identical) from {estimate.n} seeds: with no spread the exact sign "
            f"test is the valid check, and at {estimate.confidence:.4g} confidence it needs at least {needed} "
            f"seeds (all {estimate.n} on one side has p = 2^-{estimate.n})"
        )
    if threshold_unit == "relative":
        if estimate.scale == "difference":
            return "inconclusive", (
                "a relative claim cannot be decided on a difference-scale metric; claim an absolute change instead"
            )
        if estimate.scale == "ratio":
            low, high = estimate.effect_ci_low, estimate.effect_ci_high
        else:
            if estimate.relative_change is None:
                why = next((w for w in estimate.warnings if w.startswith("no relative change")), None)
                return "inconclusive", (
                    (why or "no relative change for this proportion") + "; claim an absolute change in points instead"
                )
            low = None if estimate.relative_ci_low is None else math.log1p(estimate.relative_ci_low)
            high = None if estimate.relative_ci_high is None else math.log1p(estimate.relative_ci_high)
        if estimate.n < 2:
            return "inconclusive", "fewer than 2 seeds: no confidence interval"
        if low is None and high is None:
            if estimate.bound == "none":
                return "inconclusive", (
                    "censored data: no side of the interval is valid (seeds censored in both arms, or censoring "
                    "in both directions); only the sign test is reported"
                )
            return "inconclusive", "no confidence interval"
        if direction == "increase":
            return _decide(low, high, math.log1p(r), confirm_above=True, what="log-ratio threshold ln(1+r) =")
        if direction == "decrease":
            if r >= 1.0:
                return "inconclusive", (
                    f"invalid claim: a decrease by {r:.0%} or more is impossible on a ratio scale; "
                    "claim a decrease below 100%"
                )
            return _decide(low, high, math.log1p(-r), confirm_above=False, what="log-ratio threshold ln(1-r) =")
        if higher_is_better:
            if r >= 1.0:
                return "inconclusive", "invalid claim: a relative non-inferiority margin must be below 100%"
            return _decide(low, high, math.log1p(-r), confirm_above=True, what="log-ratio margin ln(1-m) =")
        return _decide(low, high, math.log1p(r), confirm_above=False, what="log-ratio margin ln(1+m) =")

    if estimate.scale == "ratio":
        return "inconclusive", (
            "an absolute claim cannot be decided on a ratio-scale metric: its effect is a log ratio; "
            "claim a relative change instead (threshold_unit='relative')"
        )
    low, high = estimate.effect_ci_low, estimate.effect_ci_high
    if low is None or high is None:
        return "inconclusive", "fewer than 2 seeds: no confidence interval"
    if direction == "increase":
        return _decide(low, high, r, confirm_above=True, what="threshold")
    if direction == "decrease":
        return _decide(low, high, -r, confirm_above=False, what="threshold")
    if higher_is_better:
        return _decide(low, high, -r, confirm_above=True, what="margin")
    return _decide(low, high, r, confirm_above=False, what="margin")


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


def minimum_detectable_effect(sd: float | None, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest true mean effect a two-sided one-sample t-test detects with the given power.

    ``MDE = (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)``, in the units of ``sd`` (the
    per-seed effects': log ratio, points or metric units).  Ignores the noncentrality of the t
    distribution (slightly optimistic for tiny n).  None when n < 2 or ``sd`` is None; 0.0 when
    sd is 0.
    """
    _check_confidence(alpha, "alpha")
    _check_confidence(power, "power")
    if sd is None or n < 2:
        return None
    s = float(sd)
    if not math.isfinite(s) or s < 0.0:
        raise ValueError(f"sd must be a finite number >= 0, got {sd!r}")
    df = n - 1
    return float((_st.t.ppf(1.0 - alpha / 2.0, df) + _st.t.ppf(power, df)) * s / math.sqrt(n))


def _log_ratio_sd(estimate: EffectEstimate) -> float | None:
    """SD of the per-seed log ratios: ``estimate.sd`` on the ratio scale; for a proportion with
    a relative interval, recovered from it: ``(ln(1+H) - ln(1+L)) sqrt(n) / (2 t)``."""
    if estimate.scale == "ratio":
        return estimate.sd
    if estimate.deterministic:
        return 0.0
    if estimate.relative_ci_low is None or estimate.relative_ci_high is None or estimate.n < 2:
        return None
    width = math.log1p(estimate.relative_ci_high) - math.log1p(estimate.relative_ci_low)
    return width * math.sqrt(estimate.n) / (2.0 * _t_quantile(estimate.confidence, estimate.n - 1))


def mde_warning(
    estimate: EffectEstimate,
    threshold: float | None,
    *,
    threshold_unit: ThresholdUnit = "relative",
    direction: Direction = "increase",
    higher_is_better: bool = True,
    alpha: float = 0.05,
    power: float = 0.8,
) -> str | None:
    """Warning text when the design cannot detect an effect of the claimed size, else None.

    The claimed size is the threshold in the unit the claim is decided in: relative thresholds
    on the log scale (``|ln(1+r)|`` for an increase, ``|ln(1-r)|`` for a decrease, the margin's
    ``|ln(1-m)|`` / ``|ln(1+m)|`` for non-inferiority), absolute ones as given.  Warns when
    :func:`minimum_detectable_effect` (from the per-seed effects' SD in that unit) exceeds it,
    or when n < 2.  None when there is nothing to compare (no or zero threshold, a relative
    claim without a log-ratio SD, an invalid threshold, a unit the metric's scale does not
    support: relative on the difference scale, absolute on the ratio scale).
    """
    if threshold is None or float(threshold) <= 0.0:
        return None
    r = float(threshold)
    unsupported = {"relative": "difference", "absolute": "ratio"}.get(threshold_unit)
    if estimate.scale == unsupported:
        return None  # a claim the verdict refuses to decide in this unit (see claim_verdict)
    if threshold_unit == "relative":
        if direction == "decrease" or (direction == "non_inferior" and higher_is_better):
            if r >= 1.0:
                return None
            claimed = abs(math.log1p(-r))
        else:
            claimed = math.log1p(r)
        sd = _log_ratio_sd(estimate)
        unit = "log-ratio units"
    else:
        claimed, sd = r, estimate.sd
        unit = estimate.effect_unit
    if estimate.n < 2:
        return (
            f"only {estimate.n} seed(s): the minimum detectable effect cannot be estimated, so the claimed "
            "effect cannot be tested"
        )
    if sd is None:
        return None
    mde = minimum_detectable_effect(sd, estimate.n, alpha=alpha, power=power)
    if mde is not None and mde > claimed:
        return (
            f"underpowered: with n={estimate.n} seeds the minimum detectable effect (alpha={alpha:g}, "
            f"power={power:g}) is {mde:.3g} {unit}, larger than the claimed {claimed:.3g}; add seeds or reduce variance"
        )
    return None


# --------------------------------------------------------------------------- 5. heterogeneity


@dataclass(frozen=True)
class Heterogeneity(_ToDict):
    """Cochran's Q across groups' effects (see :func:`heterogeneity`)."""

    q: float | None
    df: int | None
    p_value: float | None
    i_squared: float | None
    pooled_mean: float | None
    pooled_se: float | None
    n_groups: int
    warnings: tuple[str, ...] = ()


def heterogeneity(groups: Sequence[EffectEstimate]) -> Heterogeneity:
    """Between-group heterogeneity of the effect (fixed-effect model, Cochran 1954).

    Group i: ``y_i = effect`` (on the scale's footing), ``v_i = sd_i^2 / n_i``, ``w_i = 1/v_i``.
    ``pooled_mean = sum w_i y_i / sum w_i``, ``pooled_se = sqrt(1 / sum w_i)``,
    ``Q = sum w_i (y_i - pooled_mean)^2`` with ``df = k - 1``, ``p = P(chi2_df > Q)``,
    ``I^2 = max(0, (Q - df) / Q)`` (Higgins & Thompson 2002; 0 when Q = 0).  Groups with n < 2,
    zero variance or censoring (no two-sided interval) have no finite weight and are excluded
    (noted in ``warnings``); fewer than 2 usable groups gives None statistics.  Groups must
    share a scale.
    """
    notes: list[str] = []
    ys: list[float] = []
    ws: list[float] = []
    excluded = 0
    scales = {g.scale for g in groups}
    if len(scales) > 1:
        raise ValueError(f"groups must share a scale, got {sorted(scales)}")
    for est in groups:
        if est.n < 2 or est.sd is None or est.sd == 0.0 or est.bound != "exact":
            excluded += 1
            continue
        ys.append(est.effect)
        ws.append(est.n / est.sd**2)
    if excluded:
        notes.append(f"{excluded} group(s) excluded: fewer than 2 seeds, zero variance or censored")
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


# --------------------------------------------------------------------------- 6. axis scores


@dataclass(frozen=True)
class AxisMetric:
    """One metric's per-seed values for :func:`axis_score`, aligned by seed index across metrics
    (``None`` where a seed lacks the metric).  Censoring flags, if given, only produce a warning:
    censored values enter at their budget (a bound)."""

    name: str
    scale: ScaleName
    higher_is_better: bool
    baseline: Sequence[float | None]
    intervention: Sequence[float | None]
    baseline_censored: Sequence[bool] | None = None
    intervention_censored: Sequence[bool] | None = None


AxisMetricInput = AxisMetric | tuple[str, ScaleName, bool, Sequence[float | None], Sequence[float | None]]


@dataclass(frozen=True)
class AxisScore(_ToDict):
    """Mean oriented per-seed effect in log units on one axis (see :func:`axis_score`)."""

    score: float
    ci_low: float | None
    ci_high: float | None
    significant: bool
    n_seeds: int
    n_metrics: int
    unit: str
    factor: float
    components: dict[str, float]
    deterministic: bool
    confidence: float
    warnings: tuple[str, ...] = ()


def _logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    return np.log(q / (1.0 - q))


def _oriented_effects(metric: AxisMetric) -> FloatArray:
    """Per-seed oriented log-unit effect of one metric, NaN where a seed lacks it."""
    kind = _scale_name(metric.scale)
    if len(metric.baseline) != len(metric.intervention):
        raise ValueError(f"metric {metric.name!r}: baseline and intervention must have one entry per seed")
    b = np.array([math.nan if v is None else float(v) for v in metric.baseline], dtype=np.float64)
    a = np.array([math.nan if v is None else float(v) for v in metric.intervention], dtype=np.float64)
    present = np.isfinite(a) & np.isfinite(b)
    if kind == "ratio":
        if np.any((a[present] <= 0.0) | (b[present] <= 0.0)):
            raise ValueError(f"metric {metric.name!r}: ratio-scale values must be strictly positive")
        with np.errstate(invalid="ignore", divide="ignore"):
            e = np.log(a / b)
    elif kind == "proportion":
        e = _logit(a) - _logit(b)
    else:
        e = a - b
    e = np.where(present, e, np.nan)
    return e if metric.higher_is_better else -e


def axis_score(
    metrics: Sequence[AxisMetricInput], *, confidence: float = 0.95, min_seeds: int = 3
) -> AxisScore | None:
    """Combine the metrics of one axis into one score in log units, comparable across findings.

    Input: metrics (:class:`AxisMetric` or ``(name, scale, higher_is_better, baseline,
    intervention)``), each aligned by seed index (the same seeds; ``None`` for a seed missing
    that metric).  Per seed ``i`` and metric ``k`` the oriented effect in log units:

    * ratio: ``ln(a/b)``;  proportion: ``logit(a) - logit(b)`` (values clipped to [0.01, 0.99]:
      the log odds ratio);
    * negated when lower is better, so positive always means better on the axis;
    * left out, with a note: difference-scale metrics (no log unit) and time-to-event metrics
      with any censored seed (a censored value is a bound, never averaged as a number).

    ``x_i`` = mean of the oriented effects present for seed i; ``score = mean_i x_i``; t interval
    over seeds, ``score +/- t_{(1+c)/2, s-1} sd(x) / sqrt(s)``; ``significant`` iff the interval
    excludes 0; zero variance (s >= 2): ``deterministic``, interval ``[score, score]``; fewer than
    2 seeds: no interval.  ``significant`` also needs ``min_seeds`` seeds, and a deterministic
    score :func:`deterministic_min_seeds` (as verdicts do).  ``factor = exp(score)``: the
    average multiplicative improvement (ratio or odds ratio) per metric.  ``components[name]`` =
    mean over seeds of that metric's oriented effect.  Every other metric with data counts, zero-variance ones included.

    Why: an effect size in the scale's native log units depends on the effect only, not on the
    seed-to-seed noise (unlike a standardised mean difference, which divides by the noise), so
    the same effect gives the same score whatever the noise, and more seeds narrow the interval
    without growing the score.  Averaging per seed before the t interval accounts for the
    correlation between metrics measured on the same seeds.  Returns None when no metric has
    data.
    """
    _check_confidence(confidence)
    items = [m if isinstance(m, AxisMetric) else AxisMetric(*m) for m in metrics]
    if not items:
        return None
    n_seeds_total = len(items[0].baseline)
    notes: list[str] = []
    columns: list[FloatArray] = []
    names: list[str] = []
    for m in items:
        if len(m.baseline) != n_seeds_total:
            raise ValueError("every metric must have one entry per seed (use None for a missing value)")
        n_cens = sum(bool(f) for f in (m.baseline_censored or ())) + sum(
            bool(f) for f in (m.intervention_censored or ())
        )
        if n_cens:
            notes.append(
                f"metric {m.name!r} is left out: {n_cens} censored value(s) are bounds on the event time, not "
                "numbers to average (its effect is shown on its own)"
            )
            continue
        if _scale_name(m.scale) == "difference":
            notes.append(
                f"metric {m.name!r} is left out: a difference-scale metric has no log unit to put it on this scale"
            )
            continue
        e = _oriented_effects(m)
        if not np.any(np.isfinite(e)):
            notes.append(f"metric {m.name!r} has no paired values and is left out")
            continue
        columns.append(e)
        names.append(m.name)
    if not columns:
        return None
    mat = np.vstack(columns)  # metrics x seeds
    has = np.isfinite(mat)
    seeds = np.any(has, axis=0)
    per_seed = np.nanmean(np.where(has[:, seeds], mat[:, seeds], np.nan), axis=0)
    s = _summarise(per_seed, confidence, max(1.0, float(np.max(np.abs(per_seed)))))
    components = {name: float(np.nanmean(col)) for name, col in zip(names, columns, strict=True)}
    if s.n < 2:
        notes.append("fewer than 2 seeds: no interval")
    if s.deterministic:
        notes.append("deterministic: every seed gives the same score (zero variance)")
    significant = s.low is not None and s.high is not None and (s.low > 0.0 or s.high < 0.0)
    if significant and s.n < min_seeds:
        significant = False
        notes.append(f"only {s.n} seed(s): significance needs at least {min_seeds}, as verdicts do")
    if significant and s.deterministic and s.n < deterministic_min_seeds(confidence):
        significant = False
        notes.append(
            f"deterministic score from {s.n} seeds: significance needs at least "
            f"{deterministic_min_seeds(confidence)} (the exact sign test, as for verdicts)"
        )
    return AxisScore(
        score=float(s.mean),
        ci_low=_opt_float(s.low),
        ci_high=_opt_float(s.high),
        significant=bool(significant),
        n_seeds=s.n,
        n_metrics=len(columns),
        unit="log",
        factor=float(math.exp(s.mean)),
        components=components,
        deterministic=s.deterministic,
        confidence=float(confidence),
        warnings=tuple(notes),
    )


def _improved(score: AxisScore | Mapping[str, Any] | None) -> bool:
    if score is None:
        return False
    fields = score if isinstance(score, Mapping) else score.to_dict()
    low = fields.get("ci_low")
    return bool(fields.get("significant")) and low is not None and low > 0.0


def lean_flag(
    safety: AxisScore | Mapping[str, Any] | None, capability: AxisScore | Mapping[str, Any] | None
) -> Lean:
    """Classify a finding by which axes it significantly improves.

    "Improved" = significant (see :func:`axis_score`) with the interval entirely above 0.  Scores
    may be :class:`AxisScore` objects or their ``to_dict()`` form.  Capability yes & safety no ->
    "capability-leaning"; safety yes & capability no -> "safety-leaning"; both -> "dual";
    neither -> "neither".  A missing axis (None) or one without interval counts as not improved.
    """
    s, c = _improved(safety), _improved(capability)
    if s and c:
        return "dual"
    if c:
        return "capability-leaning"
    if s:
        return "safety-leaning"
    return "neither"


# --------------------------------------------------------------------------- 7. correlation


@dataclass(frozen=True)
class Correlation(_ToDict):
    """A correlation coefficient with its interval (see :func:`correlation_with_interval`).

    ``warning`` holds the reason when ``r`` or the interval is withheld, and other caveats.
    ``p_value_method``: ``"permutation"`` (exact, all n! orderings), ``"t"`` or None.
    ``min_p_value``: the smallest p-value n observations can support, ``1/n!``.
    """

    r: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    p_value: float | None
    warning: str | None
    method: str = "pearson"
    p_value_method: str | None = None
    min_p_value: float | None = None
    n_clusters: int | None = None


def _inverse_factorial(n: int) -> float:
    return 1.0 / math.factorial(n) if n <= 170 else 0.0


def _pearson(x: FloatArray, y: FloatArray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    r = float(np.dot(xc, yc) / math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc))))
    return max(-1.0, min(1.0, r))


def _t_corr_p(r: float, n: int) -> float:
    """Two-sided p for r = 0: ``t = r sqrt((n-2)/(1-r^2))``, df = n - 2 (as scipy's tests)."""
    if abs(r) >= 1.0:
        return 0.0
    t = r * math.sqrt((n - 2) / (1.0 - r * r))
    return float(min(1.0, 2.0 * _st.t.sf(abs(t), n - 2)))


def _permutation_p(x: FloatArray, y: FloatArray) -> float:
    """Exact two-sided permutation p-value of the Pearson r of ``x`` and ``y`` (already ranked
    for Spearman): the fraction of all n! orderings of ``y`` with ``|r| >= |r_observed|``."""
    n = x.shape[0]
    xc = x - x.mean()
    yc = y - y.mean()
    den = math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc)))
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.intp)
    rs = (yc[perms] @ xc) / den
    observed = abs(float(np.dot(xc, yc)) / den)
    return float(np.mean(np.abs(rs) >= observed - 1e-12))


def correlation_with_interval(
    x: Sequence[float],
    y: Sequence[float],
    *,
    method: CorrelationMethod = "pearson",
    confidence: float = 0.95,
    min_n: int = 5,
) -> Correlation:
    """Pearson or Spearman correlation with an honest p-value and a Fisher-z interval.

    * Withheld (``r`` None, reason in ``warning``) below ``min_n`` observations or when an
      input is constant.  Spearman r is the Pearson r of average ranks.
    * p-value: for n <= 8 an exact permutation test (all n! orderings of y; the fraction with
      ``|r_perm| >= |r|``); for larger n the t approximation ``t = r sqrt((n-2)/(1-r^2))``,
      df = n - 2.  The p-value is never below ``1/n!`` (``min_p_value``): with n observations
      the observed ordering is one of n! equally likely ones under independence, so no smaller
      p-value can be supported (e.g. n = 3: p >= 1/6).
    * Interval: ``tanh(atanh(r) +/- z_{(1+c)/2} sqrt(v / (n - 3)))`` with ``v = 1`` (Pearson,
      Fisher 1921) or ``v = 1.06`` (Spearman, Fieller, Hartley & Pearson 1957, validated for
      n >= 10: below that the Spearman interval is withheld).  ``|r| = 1`` gives no interval.
    """
    xa, ya = _paired_arrays(x, y, "x", "y")
    _check_confidence(confidence)
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    min_n = max(3, int(min_n))
    n = int(xa.shape[0])
    floor = _inverse_factorial(n)
    if n < min_n:
        why = f"withheld: only {n} observation(s), at least {min_n} are needed for a correlation"
        return Correlation(None, None, None, n, None, why, method)
    if np.ptp(xa) == 0.0 or np.ptp(ya) == 0.0:
        return Correlation(None, None, None, n, None, "withheld: an input is constant", method)
    if method == "spearman":
        xa, ya = _st.rankdata(xa), _st.rankdata(ya)
    r = _pearson(xa, ya)
    if n <= MAX_EXACT_PERMUTATION_N:
        p, p_method = _permutation_p(xa, ya), "permutation"
    else:
        p, p_method = _t_corr_p(r, n), "t"
    p = max(p, floor)
    notes: list[str] = []
    low: float | None = None
    high: float | None = None
    if abs(r) >= 1.0:
        notes.append("perfect correlation: the Fisher-z interval is degenerate and is not given")
    elif n < 4:
        notes.append("no interval: the Fisher-z interval needs at least 4 observations")
    elif method == "spearman" and n < MIN_SPEARMAN_INTERVAL_N:
        notes.append(
            f"no interval: the Spearman Fisher-z variance 1.06/(n-3) is validated from n = {MIN_SPEARMAN_INTERVAL_N}"
        )
    else:
        low, high = _fisher_interval(r, n, confidence, 1.0 if method == "pearson" else 1.06)
    return Correlation(r, low, high, n, p, "; ".join(notes) or None, method, p_method, floor)


def _fisher_interval(r: float, n: int, confidence: float, variance: float) -> tuple[float, float]:
    """``tanh(atanh(r) +/- z_{(1+c)/2} sqrt(variance / (n - 3)))`` (|r| < 1, n >= 4)."""
    z = math.atanh(r)
    half = float(_st.norm.ppf(0.5 + confidence / 2.0)) * math.sqrt(variance / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)


# --------------------------------------------------------------------------- 8. differential progress


@dataclass(frozen=True)
class ProgressPoint(_ToDict):
    """One finding's safety gain above the trend (see :func:`differential_progress`)."""

    index: int
    capability: float
    safety: float
    fitted: float
    residual: float
    ci_low: float | None
    ci_high: float | None
    significant: bool


@dataclass(frozen=True)
class DifferentialProgress(_ToDict):
    """OLS trend of safety on capability across findings and each finding's residual."""

    n: int
    slope: float | None
    slope_ci_low: float | None
    slope_ci_high: float | None
    intercept: float | None
    intercept_ci_low: float | None
    intercept_ci_high: float | None
    residual_sd: float | None
    points: tuple[ProgressPoint, ...]
    confidence: float
    warning: str | None
    #: mean and sum of squared deviations of the capability scores: with ``residual_sd`` and
    #: ``n`` they give the trend's confidence band, ``t s sqrt(1/n + (x - mean)^2 / ss)``
    capability_mean: float | None = None
    capability_ss: float | None = None


#: Columns of :func:`differential_progress_table`'s per-finding table (NaN where a value is None).
PROGRESS_COLUMNS = ("capability", "safety", "fitted", "residual", "ci_low", "ci_high", "significant")


def differential_progress(
    safety: Sequence[float],
    capability: Sequence[float],
    safety_se: Sequence[float | None],
    *,
    confidence: float = 0.95,
    min_n: int = 5,
) -> DifferentialProgress:
    """Differential progress (Hendrycks & Mazeika 2022): safety gained beyond what the trend
    of safety on capability predicts.

    Across n findings (``y`` = safety score, ``x`` = capability score): OLS ``y = a + b x``,
    ``b = Sxy / Sxx``, ``a = ybar - b xbar``, residual SD ``s = sqrt(SSE / (n - 2))``;
    ``SE(b) = s / sqrt(Sxx)``, ``SE(a) = s sqrt(1/n + xbar^2 / Sxx)``; intervals with
    ``t_{(1+c)/2, n-2}``.  Per finding: ``residual_i = y_i - (a + b x_i)`` (its safety gain
    above the trend at its capability), interval ``residual_i +/- t_{(1+c)/2, n-2} *
    sqrt(s^2 (1/n + (x_i - xbar)^2 / Sxx) + se_i^2)``: the trend's fit uncertainty at ``x_i``
    combined with the finding's own safety standard error ``se_i`` (no interval when ``se_i``
    is None).  The capability score is treated as known (its error is ignored).  Withheld
    (everything None, reason in ``warning``) below ``min_n`` findings (and below 3) or when the
    capability scores are all equal.
    """
    summary, table = differential_progress_table(safety, capability, safety_se, confidence=confidence, min_n=min_n)
    if not len(table):
        return summary
    nan_to_none = [None if math.isnan(v) else v for v in table[:, 4].tolist()], [
        None if math.isnan(v) else v for v in table[:, 5].tolist()]
    points = tuple(
        ProgressPoint(i, xi, yi, fi, ri, lo, hi, bool(sig))
        for i, (xi, yi, fi, ri, lo, hi, sig) in enumerate(
            zip(*(table[:, j].tolist() for j in range(4)), *nan_to_none, table[:, 6].tolist(), strict=True)
        )
    )
    return replace(summary, points=points)


def differential_progress_table(
    safety: Sequence[float],
    capability: Sequence[float],
    safety_se: Sequence[float | None],
    *,
    confidence: float = 0.95,
    min_n: int = 5,
) -> tuple[DifferentialProgress, np.ndarray]:
    """:func:`differential_progress` as its summary (``points`` empty) and one row per finding
    in ``PROGRESS_COLUMNS`` (an (n, 7) array; NaN for an interval without ``se_i``;
    ``significant`` 1.0 or 0.0): no object per finding, for the landscape's 10,000 of them.
    A withheld trend gives an empty (0, 7) table."""
    y, x = _paired_arrays(safety, capability, "safety", "capability")
    _check_confidence(confidence)
    n = int(y.shape[0])
    if len(safety_se) != n:
        raise ValueError(f"safety_se must have one entry per finding ({n}), got {len(safety_se)}")
    given = np.array([0.0 if v is None else float(v) for v in safety_se], dtype=float)
    if not np.all(np.isfinite(given) & (given >= 0.0)):
        raise ValueError("safety_se values must be finite and >= 0 (or None)")
    own = np.where([v is None for v in safety_se], np.nan, given) if n else given
    min_n = max(3, int(min_n))
    empty = np.zeros((0, len(PROGRESS_COLUMNS)))

    def withheld(why: str) -> tuple[DifferentialProgress, np.ndarray]:
        return DifferentialProgress(n, None, None, None, None, None, None, None, (), float(confidence), why), empty

    if n < min_n:
        return withheld(f"withheld: only {n} finding(s), at least {min_n} are needed for a trend")
    xbar, ybar = float(x.mean()), float(y.mean())
    sxx = float(np.sum((x - xbar) ** 2))
    if sxx <= 64.0 * _EPS * max(1.0, float(np.max(np.abs(x)))) ** 2:
        return withheld("withheld: every finding has the same capability score, so there is no trend")
    slope = float(np.sum((x - xbar) * (y - ybar)) / sxx)
    intercept = ybar - slope * xbar
    fitted = intercept + slope * x
    resid = y - fitted
    df = n - 2
    s = math.sqrt(float(np.sum(resid**2)) / df)
    t = _t_quantile(confidence, df)
    se_b = s / math.sqrt(sxx)
    se_a = s * math.sqrt(1.0 / n + xbar**2 / sxx)
    half = t * np.sqrt(s * s * (1.0 / n + (x - xbar) ** 2 / sxx) + own**2)  # NaN where se_i is None
    lows, highs = resid - half, resid + half
    with np.errstate(invalid="ignore"):
        significant = ((lows > 0.0) | (highs < 0.0)).astype(float)  # NaN compares false
    table = np.column_stack([x, y, fitted, resid, lows, highs, significant])
    note = "findings without a safety standard error have no residual interval" if np.isnan(own).any() else None
    summary = DifferentialProgress(
        n=n,
        slope=slope,
        slope_ci_low=slope - t * se_b,
        slope_ci_high=slope + t * se_b,
        intercept=intercept,
        intercept_ci_low=intercept - t * se_a,
        intercept_ci_high=intercept + t * se_a,
        residual_sd=s,
        points=(),
        confidence=float(confidence),
        warning=note,
        capability_mean=xbar,
        capability_ss=sxx,
    )
    return summary, table


# --------------------------------------------------------------------------- 9. safetywashing


def _standardise_columns(x: FloatArray) -> FloatArray:
    """Z-score along axis -2 (observations); zero-variance columns become all zeros."""
    mu = x.mean(axis=-2, keepdims=True)
    sd = x.std(axis=-2, ddof=1, keepdims=True)
    ok = sd > 0.0
    return np.where(ok, (x - mu) / np.where(ok, sd, 1.0), 0.0)


def _pc1_scores(z: FloatArray) -> FloatArray:
    """First principal component scores of standardised ``z`` (..., obs, metrics), via SVD.

    Sign: PC1 must correlate positively with the row mean of ``z`` (mean oriented standardised
    capability).  Ties (zero covariance) fall back to a positive loading sum, then to a
    positive largest-magnitude loading.
    """
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    v = vt[..., 0, :]
    scores = np.einsum("...nk,...k->...n", z, v)
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
        r = np.where(den > 1e-12, (ra * rb).sum(axis=-1) / np.where(den > 1e-12, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


def capabilities_correlation(
    safety_values: Sequence[float],
    capability_matrix: Sequence[Sequence[float]],
    *,
    safety_higher_is_better: bool,
    capability_higher_is_better: Sequence[bool],
    clusters: Sequence[int] | None = None,
    n_bootstrap: int = 1000,
    rng_seed: int = 0,
    min_n: int = 10,
    confidence: float = 0.95,
) -> Correlation:
    """How much a safety metric just tracks general capability (Ren et al. 2024, "Safetywashing").

    Rows are observations (trained models: each arm of each run), columns capability metrics.

    1. Orient: negate the safety values and every capability column whose metric is
       lower-is-better, so higher is better everywhere (as Ren et al. do *before* the PCA;
       otherwise a loss and an accuracy cancel and the sign is arbitrary).
    2. Z-score each capability column (ddof=1); drop zero-variance columns.
    3. Capabilities score = first principal component scores (SVD), sign fixed so that PC1
       correlates positively with the mean oriented standardised capability.
    4. ``r`` = Spearman correlation of the oriented safety values with the capabilities score.
    5. Interval: percentile bootstrap over *clusters* (``clusters[i]`` = the run of row i: the
       two arms of a run share a seed and data, so they are resampled together; without
       clusters every row is its own cluster), ``n_bootstrap`` resamples,
       ``numpy.random.default_rng(rng_seed)``, re-running steps 2-4 in every resample
       (degenerate resamples are discarded and counted in the warning), widened where needed
       to at least the Fisher-z interval with the number of clusters as n (variance
       1.06/(k-3)): a percentile bootstrap of 10-15 clusters alone covered only 88-92%.
    6. p-value: without clustering (every cluster of size 1), the t approximation with n - 2 df,
       floored at 1/n!; with clustered rows no p-value (rows are not independent; read the
       cluster-bootstrap interval).

    Withheld (``r`` None, reason in ``warning``) below ``min_n`` clusters (runs; observations
    when unclustered), when every capability column or the safety values are constant.
    """
    s = _as_finite_1d(safety_values, "safety_values")
    try:
        x = np.asarray(capability_matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"capability_matrix must be an observations x metrics matrix of numbers: {exc}") from exc
    hib = np.asarray(list(capability_higher_is_better), dtype=bool)
    if x.ndim == 1:
        # no observations at all ([]) has as many columns as flags; a flat list is one column
        x = x.reshape(0, max(1, hib.shape[0])) if x.shape[0] == 0 else x[:, None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"capability_matrix must be observations x metrics (2-D, >= 1 column), got {x.shape}")
    n = int(s.shape[0])
    if x.shape[0] != n:
        raise ValueError(
            f"safety_values and capability_matrix must have one row per observation; got {n} and {x.shape[0]}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("capability_matrix must contain only finite values")
    if hib.shape != (x.shape[1],):
        raise ValueError(f"capability_higher_is_better needs one flag per column ({x.shape[1]}), got {hib.shape}")
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")
    _check_confidence(confidence)
    if clusters is None:
        cluster_ids = np.arange(n)
    else:
        cluster_ids = np.asarray(list(clusters))
        if cluster_ids.shape != (n,):
            raise ValueError(f"clusters needs one id per observation ({n}), got {cluster_ids.shape}")
    _, inverse, sizes = np.unique(cluster_ids, return_inverse=True, return_counts=True)
    n_clusters = int(sizes.shape[0])
    clustered = bool(np.any(sizes > 1))

    notes: list[str] = []

    def result(r: float | None, low: float | None, high: float | None, p: float | None) -> Correlation:
        return Correlation(
            r,
            low,
            high,
            n,
            p,
            "; ".join(notes) or None,
            "spearman",
            None if p is None else "t",
            _inverse_factorial(n),
            n_clusters,
        )

    if n_clusters < max(4, min_n):
        unit = "run(s)" if clustered else "observation(s)"
        notes.append(f"withheld: only {n_clusters} {unit}, at least {max(4, min_n)} are needed")
        return result(None, None, None, None)
    s = s if safety_higher_is_better else -s
    x = np.where(hib[None, :], x, -x)
    keep = x.std(axis=0) > 0.0
    if not np.any(keep):
        notes.append("withheld: every capability metric is constant across observations")
        return result(None, None, None, None)
    if not np.all(keep):
        notes.append(f"dropped {int((~keep).sum())} zero-variance capability column(s)")
    x = x[:, keep]
    if np.ptp(s) == 0.0:
        notes.append("withheld: the safety values are constant across observations")
        return result(None, None, None, None)

    pc1 = _pc1_scores(_standardise_columns(x))
    r = float(_rowwise_spearman(s[None, :], pc1[None, :])[0])
    if not math.isfinite(r):
        notes.append("withheld: the capabilities component is constant across observations")
        return result(None, None, None, None)

    rng = np.random.default_rng(rng_seed)
    boot = np.full(n_bootstrap, np.nan)
    members = [np.flatnonzero(inverse == g) for g in range(n_clusters)]
    if np.all(sizes == sizes[0]):
        table = np.vstack(members)  # clusters x size
        per = n_clusters * int(sizes[0]) * (x.shape[1] + 1)
        rows_per_chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // per)
        for start in range(0, n_bootstrap, rows_per_chunk):
            stop = min(n_bootstrap, start + rows_per_chunk)
            picks = rng.integers(0, n_clusters, size=(stop - start, n_clusters))
            idx = table[picks].reshape(stop - start, -1)
            boot[start:stop] = _rowwise_spearman(s[idx], _pc1_scores(_standardise_columns(x[idx])))
    else:
        for i in range(n_bootstrap):
            picks = rng.integers(0, n_clusters, size=n_clusters)
            idx = np.concatenate([members[g] for g in picks])
            boot[i] = _rowwise_spearman(s[idx][None, :], _pc1_scores(_standardise_columns(x[idx]))[None, :])[0]
    valid = boot[np.isfinite(boot)]
    if valid.size < n_bootstrap:
        notes.append(f"{n_bootstrap - valid.size} of {n_bootstrap} bootstrap resamples were degenerate")
    low: float | None = None
    high: float | None = None
    if valid.size >= 2:
        alpha = 1.0 - confidence
        lo, hi = np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0])
        low, high = float(lo), float(hi)
        if abs(r) < 1.0:
            # A percentile bootstrap of a few clusters under-covers; never report an interval
            # narrower than Fisher's z with the clusters (runs) as the sample size.
            f_low, f_high = _fisher_interval(r, n_clusters, confidence, 1.06)
            low, high = min(low, f_low), max(high, f_high)
    else:
        notes.append("too few usable bootstrap resamples for an interval")
    p: float | None = None
    if clustered:
        notes.append(
            f"{n} observations in {n_clusters} clusters (runs): no p-value, observations within a run are not "
            "independent; the interval resamples runs"
        )
    else:
        p = max(_t_corr_p(r, n), _inverse_factorial(n))
    return result(r, low, high, p)
