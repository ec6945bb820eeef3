"""The landscape page's readable parts: the scatter on the effects' scales with every point
labelled or hoverable, overlaps separated, and the aggregate answer, the trend and differential
progress in plain words. Built on :func:`registry.dashboard.selectors.landscape` (the data) and
:mod:`registry.dashboard.charts` (the geometry); no HTTP here."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from django.core.cache import cache
from django.urls import get_script_prefix

from registry.dashboard import charts, selectors
from registry.effects.selectors import MIN_LANDSCAPE_FINDINGS, landscape_get

#: How long a built landscape page is kept. It is keyed on everything it is built from (the
#: landscape's data, this code and its templates), so it is never stale; this bounds the cache.
PAGE_CACHE_S = 300
_DASHBOARD = Path(__file__).resolve().parent
#: What the page is built by: a change to any of these (a deploy) makes every cached page unused.
_BUILT_BY = (
    _DASHBOARD / "landscape.py",
    _DASHBOARD / "charts.py",
    _DASHBOARD / "selectors.py",
    _DASHBOARD / "templates" / "dashboard" / "landscape.html",
    _DASHBOARD / "templates" / "dashboard" / "_scatter.html",
)


def trend_line(progress: dict[str, Any]) -> charts.TrendLine | None:
    """The fitted trend with what its confidence band needs, or None when the trend is withheld
    or its uncertainty is unknown (a trend is never drawn without its band)."""
    from scipy import stats as scipy_stats

    values = [progress.get(k) for k in ("slope", "intercept", "residual_sd", "capability_mean", "capability_ss")]
    n = progress.get("n")
    if len(charts.finite(values)) != 5 or not isinstance(n, int) or n < 3:
        return None
    slope, intercept, s, x_mean, x_ss = (float(v) for v in values)
    confidence = charts.finite([progress.get("confidence")]) or [0.95]
    t = float(scipy_stats.t.ppf(0.5 + confidence[0] / 2.0, n - 2))
    line = charts.TrendLine(intercept=intercept, slope=slope, n=n, s=s, x_mean=x_mean, x_ss=x_ss, t=t)
    return line if line.has_band else None


def _factor(log_units: float) -> str:
    return charts.factor_text(log_units)


def trend_words(progress: dict[str, Any], shown: bool) -> str:
    """The trend of safety on capability in a sentence, hedged by its interval."""
    n = progress.get("n") or 0
    if not shown:
        return (
            f"No trend is drawn: a trend needs at least {MIN_LANDSCAPE_FINDINGS} findings with both scores and "
            f"its uncertainty; {n} finding{'s' if n != 1 else ''} {'have' if n != 1 else 'has'} both."
        )
    slope = float(progress["slope"])
    low, high = charts.finite([progress.get("slope_ci_low")]), charts.finite([progress.get("slope_ci_high")])
    interval = f" (95% interval {charts.fmt_log(low[0])} to {charts.fmt_log(high[0])})" if low and high else ""
    text = (
        f"Across {n} findings with both scores, one more log unit of capability (×2.7) comes with "
        f"{charts.fmt_log(slope)} log units of safety on average{interval}."
    )
    if low and high and low[0] <= 0 <= high[0]:
        text += " That interval includes 0: these findings do not show whether safety rises or falls with capability."
    elif low and high:
        text += f" Safety {'rises' if slope > 0 else 'falls'} with capability across these findings."
    return text + " The dashed line is this trend; the shaded band is its 95% confidence band."


def progress_words(progress: dict[str, Any], shown: bool) -> str:
    """Differential progress (Hendrycks & Mazeika 2022) in a sentence."""
    if not shown:
        return "Differential progress (safety gained beyond the trend) needs the trend, so it is not measured here yet."
    n = progress.get("n") or 0
    above, below = progress.get("n_above") or 0, progress.get("n_below") or 0
    within = max(n - above - below, 0)
    return (
        f"Differential progress: {above} of {n} finding{'s' if n != 1 else ''} buy measurably more safety than the "
        f"trend predicts for their capability gain, {below} measurably less, and {within} are within the trend's "
        "uncertainty (their 95% intervals include the trend)."
    )


def scale_words(geometry: charts.ScatterGeometry, points: list[charts.ScatterPoint]) -> list[str]:
    """Why an axis is on a symmetric log scale, with the largest score that made it so."""
    words = []
    for name, scale, values in (
        ("capability", geometry.x_scale, [p.x for p in points]),
        ("safety", geometry.y_scale, [p.y for p in points]),
    ):
        if scale.kind == "symlog":
            largest = max(charts.finite(values), key=abs)
            words.append(
                f"The {name} axis is on a symmetric log scale because its scores span decades (up to "
                f"{charts.fmt_log(largest)} log units, {_factor(largest)}): linear within ±1 of 0, then each "
                "grid line is ten times the last."
            )
    return words


def overlap_words(geometry: charts.ScatterGeometry) -> str:
    if not geometry.overlaps:
        return ""
    groups = len(geometry.overlaps)
    return (
        f"{geometry.n_overlapping} points overlapped in {groups} place{'s' if groups != 1 else ''} "
        "(equal or nearly equal scores): each group is spread round its shared position, a thin line leads back "
        "to it, and the group is marked “N overlapping”. The table below gives the exact scores."
    )


def label_words(geometry: charts.ScatterGeometry) -> str:
    n = len(geometry.points)
    if not n:
        return ""
    if not geometry.labelled:
        return (
            f"With {n} points the titles are not written on the chart: hover over or focus (Tab) a point for its "
            "title and scores, and select it to open the finding."
        )
    if geometry.labels_hidden:
        return (
            f"{geometry.labels_hidden} title(s) did not fit beside their point: hover over or focus a point for its "
            "title and scores; every point opens its finding."
        )
    return (
        "Every point is labelled with its finding's title; hover over or focus it for its scores, "
        "select it to open it."
    )


@functools.cache
def _code_version() -> str:
    digest = hashlib.sha256()
    for path in _BUILT_BY:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def landscape_page(*, user: Any, **filters: str) -> dict[str, Any]:
    """Everything the landscape page shows. Built from :func:`landscape_get`'s data and reused
    while that data is the same (``fragment_key`` also names the page's cached table fragments):
    the scatter, the tables and the words cost more than the data."""
    data = landscape_get(user=user, **{name: value or None for name, value in filters.items()}) or {}
    # JSON, not pickle: equal data always gives equal text (pickle's bytes depend on which
    # strings are the same object)
    text = json.dumps([data, get_script_prefix(), _code_version()], default=repr)
    key = hashlib.sha256(text.encode()).hexdigest()
    context = cache.get(f"landscape-page:{key}")
    if context is None:
        context = _build(data, filters)
        cache.set(f"landscape-page:{key}", context, PAGE_CACHE_S)
    return {**context, "fragment_key": key}


def _build(data: dict[str, Any], filters: dict[str, str]) -> dict[str, Any]:
    context = selectors.landscape(user=None, data=data, **filters)
    progress = context.get("progress") or {}
    line = trend_line(progress) if context.get("trend") else None
    points = context["points"]
    wide = charts.scatter_context(points, trend=line, uid="scatter-wide")
    narrow = charts.scatter_context(points, trend=line, uid="scatter-narrow", compact=True)
    geometry = wide["g"]
    context.update(
        scatter=charts.mark_safe(_render(wide)),
        scatter_narrow=charts.mark_safe(_render(narrow)),
        trend_drawn=line is not None,
        trend_words=trend_words(progress, line is not None),
        progress_words=progress_words(progress, line is not None),
        scale_words=scale_words(geometry, points),
        overlap_words=overlap_words(geometry),
        label_words=label_words(geometry),
        n_overlapping=geometry.n_overlapping,
        min_trend_findings=MIN_LANDSCAPE_FINDINGS,
    )
    if line is None:
        context["trend"] = None
        context["progress_rows"] = []
    return context


def _render(context: dict[str, Any]) -> str:
    from django.template.loader import render_to_string

    return render_to_string("dashboard/_scatter.html", context)
