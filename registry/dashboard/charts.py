"""Small SVG charts drawn on the server: pure functions from numbers to markup.

Nothing here touches the database or the request. Each chart is split in two: a *geometry*
function that maps values to coordinates (unit-tested on its own) and a renderer that turns
the geometry into an ``<svg>`` string, marked safe because every piece of text in it is escaped
here. The markup carries only classes; colours live in ``dashboard.css``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

Formatter = Callable[[float], str]


# ---------------------------------------------------------------- scales and formatting


def finite(values: Iterable[float | None]) -> list[float]:
    """The values that are real, finite numbers (None, NaN and infinities dropped)."""
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out.append(float(value))
    return out


def axis_domain(values: Iterable[float | None], *, include_zero: bool = True, pad: float = 0.08) -> tuple[float, float]:
    """A (low, high) range covering the values (and 0), widened by ``pad`` on each side.

    All-equal values (or none at all) get a range around them, never an empty one.
    """
    numbers = finite(values)
    if include_zero:
        numbers.append(0.0)
    if not numbers:
        return (-1.0, 1.0)
    low, high = min(numbers), max(numbers)
    if low == high:
        half = max(abs(low) * 0.5, 1.0)
        return (low - half, high + half)
    margin = (high - low) * pad
    return (low - margin, high + margin)


def linear(domain: tuple[float, float], span: tuple[float, float]) -> Callable[[float], float]:
    """Map ``domain`` linearly onto ``span`` (a span may run backwards, as SVG's y axis does)."""
    d0, d1 = domain
    r0, r1 = span
    width = (d1 - d0) or 1.0

    def scale(value: float) -> float:
        return r0 + (value - d0) / width * (r1 - r0)

    return scale


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values inside [low, high], about ``count`` of them, 1, 2 or 5 times a power of
    ten apart (whichever step is nearest to an even split)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 5, 10)), key=lambda s: abs(math.log(s / raw)))
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else round(value, 12))
        value += step
    return ticks


def fmt_number(value: float) -> str:
    """Three significant digits, without an exponent for everyday magnitudes."""
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.3g}"
    return f"{value:.2e}"


def fmt_percent(value: float) -> str:
    """A relative change as a signed percentage: -0.5 -> "-50%"."""
    percent = value * 100
    digits = 0 if abs(percent) >= 10 else 1
    return f"{percent:+.{digits}f}%"


def fmt_points(value: float) -> str:
    """A difference of proportions (fractions) in percentage points: 0.123 -> "+12.3 pt"."""
    points = value * 100
    digits = 0 if abs(points) >= 10 else 1
    return f"{points:+.{digits}f} pt"


def fmt_log(value: float) -> str:
    """A score in log units, signed: 0.693 -> "+0.69"."""
    if abs(value) >= 100:
        return f"{value:+.0f}"
    return f"{value:+.2f}"


def fmt_factor(factor: float) -> str:
    """A multiplicative factor: 2.0 -> "×2.0", 150 -> "×150", 22026 -> "×22,026"."""
    if not math.isfinite(factor):
        return "×∞" if factor > 0 else "×?"
    if factor < 10:
        return f"×{factor:.2g}" if factor < 0.995 else f"×{factor:.1f}"
    return f"×{factor:,.0f}"


def factor_text(score: float) -> str:
    """What a score in log units means as a factor: +0.69 -> "×2.0 better", -0.69 -> "×2.0 worse"."""
    if not math.isfinite(score):
        return ""
    magnitude = math.exp(min(abs(score), 700.0))
    if magnitude < 1.005:
        return "×1.0, no change"
    return f"{fmt_factor(magnitude)} {'better' if score > 0 else 'worse'}"


def _n(value: float) -> str:
    """A coordinate as SVG text (two decimals are plenty)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _svg(width: float, height: float, label: str, body: Iterable[str], css_class: str) -> SafeString:
    title = escape(label)
    return mark_safe(
        f'<svg class="chart {css_class}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_n(width)} {_n(height)}" '
        f'width="{_n(width)}" height="{_n(height)}" role="img" aria-label="{title}">'
        f"<title>{title}</title>{''.join(body)}</svg>"
    )


# ---------------------------------------------------------------- interval plot


@dataclass(frozen=True)
class IntervalGeometry:
    """Where an estimate and its interval fall on a horizontal axis of ``width`` pixels."""

    domain: tuple[float, float]
    x_estimate: float | None
    x_low: float | None
    x_high: float | None
    x_zero: float
    x_reference: float | None


def interval_geometry(
    estimate: float | None,
    low: float | None = None,
    high: float | None = None,
    *,
    reference: float | None = None,
    domain: tuple[float, float] | None = None,
    width: float = 180,
    margin: float = 8,
) -> IntervalGeometry:
    """Coordinates of an estimate, its interval (both ends or neither) and a reference value.

    The axis always contains 0 (no effect). A missing or half-missing interval is drawn as
    no interval at all; values outside a given ``domain`` are clamped to its ends.
    """
    estimate = (finite([estimate]) or [None])[0]
    low, high = (finite([low]) or [None])[0], (finite([high]) or [None])[0]
    if low is None or high is None:
        low = high = None
    elif low > high:
        low, high = high, low
    reference = (finite([reference]) or [None])[0]
    if domain is None:
        domain = axis_domain([estimate, low, high, reference])
    scale = linear(domain, (margin, width - margin))

    def x(value: float | None) -> float | None:
        if value is None:
            return None
        return min(max(scale(value), margin), width - margin)

    return IntervalGeometry(
        domain=domain,
        x_estimate=x(estimate),
        x_low=x(low),
        x_high=x(high),
        x_zero=min(max(scale(0.0), margin), width - margin),
        x_reference=x(reference),
    )


def interval_svg(
    estimate: float | None,
    low: float | None = None,
    high: float | None = None,
    *,
    reference: float | None = None,
    label: str = "",
    formatter: Formatter = fmt_percent,
    domain: tuple[float, float] | None = None,
    width: float = 180,
    height: float = 30,
    bound: str | None = None,
) -> SafeString:
    """An inline interval plot: a dot at the estimate, whiskers over the interval, a line at 0
    (no effect) and, when given, a dashed mark at a reference (e.g. the claimed effect).

    ``bound="upper"`` (only ``high`` is valid: "at most") draws an open whisker from the left
    edge to ``high``; ``bound="lower"`` (only ``low``: "at least") from ``low`` to the right edge.
    """
    if bound in ("upper", "lower"):
        return _one_sided_svg(
            high if bound == "upper" else low, bound=bound, reference=reference, label=label,
            formatter=formatter, domain=domain, width=width, height=height,
        )
    g = interval_geometry(estimate, low, high, reference=reference, domain=domain, width=width)
    mid = height / 2 - 3
    parts, described = _interval_frame(g, reference, formatter, width, height)
    if g.x_low is not None and g.x_high is not None:
        parts.append(
            f'<line class="chart__whisker" x1="{_n(g.x_low)}" x2="{_n(g.x_high)}" y1="{_n(mid)}" y2="{_n(mid)}"/>'
            f'<line class="chart__whisker" x1="{_n(g.x_low)}" x2="{_n(g.x_low)}" y1="{_n(mid - 5)}" '
            f'y2="{_n(mid + 5)}"/>'
            f'<line class="chart__whisker" x1="{_n(g.x_high)}" x2="{_n(g.x_high)}" y1="{_n(mid - 5)}" '
            f'y2="{_n(mid + 5)}"/>'
        )
        described.insert(0, f"interval {formatter(low)} to {formatter(high)}")
    else:
        described.insert(0, "no interval")
    if g.x_estimate is not None:
        parts.append(f'<circle class="chart__estimate" cx="{_n(g.x_estimate)}" cy="{_n(mid)}" r="4"/>')
        described.insert(0, f"estimate {formatter(estimate)}")
    else:
        parts.append(
            f'<text class="chart__note" x="{_n(width / 2)}" y="{_n(mid + 4)}" text-anchor="middle">no data</text>'
        )
        described.insert(0, "no estimate")
    text = f"{label}: " if label else ""
    return _svg(width, height, text + ", ".join(described), parts, "chart--interval")


def _interval_frame(
    g: IntervalGeometry, reference: float | None, formatter: Formatter, width: float, height: float
) -> tuple[list[str], list[str]]:
    """The axis, the zero line and the claimed reference of an interval chart, and their words."""
    parts = [
        f'<line class="chart__axis" x1="8" x2="{_n(width - 8)}" y1="{_n(height - 6)}" y2="{_n(height - 6)}"/>',
        f'<line class="chart__zero" x1="{_n(g.x_zero)}" x2="{_n(g.x_zero)}" y1="2" y2="{_n(height - 6)}"/>',
    ]
    described = []
    if g.x_reference is not None:
        parts.append(
            f'<line class="chart__reference" x1="{_n(g.x_reference)}" x2="{_n(g.x_reference)}" '
            f'y1="2" y2="{_n(height - 6)}"/>'
        )
        described.append(f"claimed {formatter(reference)}")
    return parts, described


def _one_sided_svg(
    limit: float | None,
    *,
    bound: str,
    reference: float | None,
    label: str,
    formatter: Formatter,
    domain: tuple[float, float] | None,
    width: float,
    height: float,
) -> SafeString:
    """A one-sided interval: the valid limit with a cap, an open whisker towards the other side."""
    g = interval_geometry(limit, limit, limit, reference=reference, domain=domain, width=width)
    mid = height / 2 - 3
    parts, described = _interval_frame(g, reference, formatter, width, height)
    if g.x_estimate is None:
        parts.append(
            f'<text class="chart__note" x="{_n(width / 2)}" y="{_n(mid + 4)}" text-anchor="middle">'
            "no valid bound</text>"
        )
        described.insert(0, "no valid bound")
    else:
        x = g.x_estimate
        edge = 8.0 if bound == "upper" else width - 8.0
        parts.append(
            f'<line class="chart__whisker chart__whisker--open" x1="{_n(min(x, edge))}" x2="{_n(max(x, edge))}" '
            f'y1="{_n(mid)}" y2="{_n(mid)}"/>'
            f'<line class="chart__whisker" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(mid - 5)}" y2="{_n(mid + 5)}"/>'
        )
        described.insert(0, f"{'at most' if bound == 'upper' else 'at least'} {formatter(limit)}")
    text = f"{label}: " if label else ""
    return _svg(width, height, text + ", ".join(described), parts, "chart--interval")


# ---------------------------------------------------------------- per-arm dot plot


@dataclass(frozen=True)
class DotGeometry:
    arm: str
    run: int
    seed: int
    value: float
    x: float
    y: float


@dataclass(frozen=True)
class DotPlotGeometry:
    domain: tuple[float, float]
    rows: dict[str, float]
    dots: list[DotGeometry]
    ticks: list[tuple[float, float]] = field(default_factory=list)


def dot_plot_geometry(
    values: Sequence[tuple[str, int, int, float]],
    *,
    arms: Sequence[str] | None = None,
    width: float = 300,
    row_height: float = 26,
    left: float = 90,
    right: float = 12,
    top: float = 10,
) -> DotPlotGeometry:
    """Coordinates for ``(arm, run id, seed, value)`` items: one row per arm, x by value."""
    if arms is None:
        arms = sorted({arm for arm, *_ in values}, key=lambda a: (a != "baseline", a != "intervention", a))
    rows = {arm: top + row_height * (i + 0.5) for i, arm in enumerate(arms)}
    numbers = finite(value for *_, value in values)
    domain = axis_domain(numbers, include_zero=False, pad=0.1)
    scale = linear(domain, (left, width - right))
    dots = [
        DotGeometry(arm, run, seed, float(value), scale(value), rows[arm])
        for arm, run, seed, value in values
        if arm in rows and finite([value])
    ]
    ticks = [(t, scale(t)) for t in nice_ticks(*domain, count=4)]
    return DotPlotGeometry(domain, rows, dots, ticks)


def dot_plot_svg(
    values: Sequence[tuple[str, int, int, float]],
    *,
    metric: str,
    unit: str = "",
    arms: Sequence[str] | None = None,
    width: float = 300,
) -> SafeString:
    """Per-arm values of one metric across seeds; lines join the arms of the same run."""
    row_height, top, bottom = 26, 10, 22
    g = dot_plot_geometry(values, arms=arms, width=width, row_height=row_height, top=top)
    height = top + row_height * max(len(g.rows), 1) + bottom
    axis_y = height - bottom + 4
    parts = [f'<line class="chart__axis" x1="90" x2="{_n(width - 12)}" y1="{_n(axis_y)}" y2="{_n(axis_y)}"/>']
    for value, x in g.ticks:
        parts.append(
            f'<line class="chart__tick" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(top)}" y2="{_n(axis_y)}"/>'
            f'<text class="chart__tick-label" x="{_n(x)}" y="{_n(axis_y + 13)}" text-anchor="middle">'
            f"{escape(fmt_number(value))}</text>"
        )
    for arm, y in g.rows.items():
        parts.append(
            f'<text class="chart__row-label" x="84" y="{_n(y + 4)}" text-anchor="end">{escape(arm)}</text>'
        )
    by_run: dict[int, list[DotGeometry]] = {}
    for dot in g.dots:
        by_run.setdefault(dot.run, []).append(dot)
    order = list(g.rows)
    for dots in by_run.values():
        dots.sort(key=lambda d: order.index(d.arm))
        for a, b in zip(dots, dots[1:], strict=False):
            parts.append(
                f'<line class="chart__pair" x1="{_n(a.x)}" y1="{_n(a.y)}" x2="{_n(b.x)}" y2="{_n(b.y)}"/>'
            )
    for dot in g.dots:
        css = "chart__dot chart__dot--" + ("baseline" if dot.arm == "baseline" else "intervention"
                                            if dot.arm == "intervention" else "other")
        parts.append(
            f'<circle class="{css}" cx="{_n(dot.x)}" cy="{_n(dot.y)}" r="4">'
            f"<title>{escape(dot.arm)}, seed {dot.seed} (run {dot.run}): {escape(fmt_number(dot.value))}</title>"
            f"</circle>"
        )
    unit_text = f" ({unit})" if unit else ""
    label = f"{metric}{unit_text} per arm across {len(by_run)} run(s)"
    return _svg(width, height, label, parts, "chart--dots")


# ---------------------------------------------------------------- safety vs capability scatter


@dataclass(frozen=True)
class ScatterPoint:
    """One finding: x = capability score, y = safety score, each with its interval."""

    finding: int
    title: str
    href: str
    x: float
    y: float
    x_low: float | None = None
    x_high: float | None = None
    y_low: float | None = None
    y_high: float | None = None
    lean: str = "neither"


@dataclass(frozen=True)
class ScatterGeometry:
    x_domain: tuple[float, float]
    y_domain: tuple[float, float]
    origin: tuple[float, float]
    points: list[dict]
    x_ticks: list[tuple[float, float]]
    y_ticks: list[tuple[float, float]]
    trend: tuple[float, float, float, float] | None = None


SCATTER_BOX = {"width": 720, "height": 480, "left": 56, "right": 20, "top": 20, "bottom": 48}
#: Whiskers may widen an axis by at most this fraction of the points' span on each side; longer
#: ones are cut at the frame (and marked), so one wide interval cannot squash every point.
WHISKER_ROOM = 0.5


def scatter_domain(estimates: Sequence[float | None], bounds: Sequence[float | None]) -> tuple[float, float]:
    """An axis range for scores: the estimates and 0 (padded), widened by the intervals' ends up
    to ``WHISKER_ROOM`` of that span on each side. Linear, never squashed: scores are in log
    units, so equal distances are equal factors."""
    low, high = axis_domain(estimates)
    room = (high - low) * WHISKER_ROOM
    ends = finite(bounds)
    if ends:
        low = max(min(low, min(ends)), low - room)
        high = min(max(high, max(ends)), high + room)
    return (low, high)


def _clip_segment(
    x0: float, y0: float, x1: float, y1: float, box: tuple[float, float, float, float]
) -> tuple[float, float, float, float] | None:
    """Liang-Barsky: the part of a segment inside ``box`` = (xmin, ymin, xmax, ymax), or None."""
    xmin, ymin, xmax, ymax = box
    dx, dy = x1 - x0, y1 - y0
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, x0 - xmin), (dx, xmax - x0), (-dy, y0 - ymin), (dy, ymax - y0)):
        if p == 0:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return None
    return (x0 + t0 * dx, y0 + t0 * dy, x0 + t1 * dx, y0 + t1 * dy)


def scatter_geometry(
    points: Sequence[ScatterPoint], *, trend: tuple[float, float] | None = None, **box: float
) -> ScatterGeometry:
    """Coordinates of every point and its whiskers (clipped to the frame, ``*_clipped`` saying
    which ends were cut); y grows upwards as on paper. ``trend`` = (intercept, slope) of
    y on x gives the segment of that line inside the frame."""
    b = {**SCATTER_BOX, **box}
    x_domain = scatter_domain([p.x for p in points], [v for p in points for v in (p.x_low, p.x_high)])
    y_domain = scatter_domain([p.y for p in points], [v for p in points for v in (p.y_low, p.y_high)])
    left, right, top, bottom = b["left"], b["width"] - b["right"], b["top"], b["height"] - b["bottom"]
    sx = linear(x_domain, (left, right))
    sy = linear(y_domain, (bottom, top))

    def clip(value: float, lo: float, hi: float) -> float:
        return min(max(value, min(lo, hi)), max(lo, hi))

    def opt(scale: Callable[[float], float], value: float | None, lo: float, hi: float) -> float | None:
        return clip(scale(value), lo, hi) if finite([value]) else None

    def cut(value: float | None, domain: tuple[float, float]) -> bool:
        return bool(finite([value])) and not (domain[0] <= value <= domain[1])

    placed = [
        {
            "point": p,
            "cx": sx(p.x),
            "cy": sy(p.y),
            "x_low": opt(sx, p.x_low, left, right),
            "x_high": opt(sx, p.x_high, left, right),
            "y_low": opt(sy, p.y_low, bottom, top),
            "y_high": opt(sy, p.y_high, bottom, top),
            "x_clipped": cut(p.x_low, x_domain) or cut(p.x_high, x_domain),
            "y_clipped": cut(p.y_low, y_domain) or cut(p.y_high, y_domain),
        }
        for p in points
        if finite([p.x]) and finite([p.y])
    ]
    segment = None
    if trend is not None and len(finite(trend)) == 2:
        intercept, slope = trend
        x0, x1 = x_domain
        segment = _clip_segment(sx(x0), sy(intercept + slope * x0), sx(x1), sy(intercept + slope * x1),
                                (left, top, right, bottom))
    return ScatterGeometry(
        x_domain,
        y_domain,
        (sx(0.0), sy(0.0)),
        placed,
        [(t, sx(t)) for t in nice_ticks(*x_domain)],
        [(t, sy(t)) for t in nice_ticks(*y_domain)],
        segment,
    )


def scatter_svg(
    points: Sequence[ScatterPoint], *, trend: tuple[float, float] | None = None, **box: float
) -> SafeString:
    """Safety (up) against capability (right) per finding, scores in log units, with interval
    whiskers, each point a link to its finding. Quadrants split at 0 (no change); ``trend`` =
    (intercept, slope) draws the fitted trend of safety on capability as a dashed line."""
    b = {**SCATTER_BOX, **box}
    g = scatter_geometry(points, trend=trend, **box)
    left, right = b["left"], b["width"] - b["right"]
    top, bottom = b["top"], b["height"] - b["bottom"]
    ox, oy = g.origin
    parts = [f'<rect class="chart__frame" x="{_n(left)}" y="{_n(top)}" width="{_n(right - left)}" '
             f'height="{_n(bottom - top)}"/>']
    for value, x in g.x_ticks:
        parts.append(
            f'<line class="chart__grid" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(top)}" y2="{_n(bottom)}"/>'
            f'<text class="chart__tick-label" x="{_n(x)}" y="{_n(bottom + 14)}" text-anchor="middle">'
            f"{escape(fmt_number(value))}</text>"
        )
    for value, y in g.y_ticks:
        parts.append(
            f'<line class="chart__grid" x1="{_n(left)}" x2="{_n(right)}" y1="{_n(y)}" y2="{_n(y)}"/>'
            f'<text class="chart__tick-label" x="{_n(left - 6)}" y="{_n(y + 4)}" text-anchor="end">'
            f"{escape(fmt_number(value))}</text>"
        )
    parts.append(
        f'<line class="chart__zero" x1="{_n(ox)}" x2="{_n(ox)}" y1="{_n(top)}" y2="{_n(bottom)}"/>'
        f'<line class="chart__zero" x1="{_n(left)}" x2="{_n(right)}" y1="{_n(oy)}" y2="{_n(oy)}"/>'
        f'<text class="chart__quadrant" x="{_n(left + 6)}" y="{_n(top + 14)}">safer, less capable</text>'
        f'<text class="chart__quadrant" x="{_n(right - 6)}" y="{_n(top + 14)}" text-anchor="end">safer and more capable'
        f"</text>"
        f'<text class="chart__quadrant" x="{_n(right - 6)}" y="{_n(bottom - 6)}" text-anchor="end">'
        f"more capable, less safe</text>"
        f'<text class="chart__quadrant" x="{_n(left + 6)}" y="{_n(bottom - 6)}">less safe, less capable</text>'
        f'<text class="chart__axis-label" x="{_n((left + right) / 2)}" y="{_n(b["height"] - 8)}" '
        f'text-anchor="middle">capability score (log units: +0.69 = ×2 better) →</text>'
        f'<text class="chart__axis-label" transform="translate(14 {_n((top + bottom) / 2)}) rotate(-90)" '
        f'text-anchor="middle">safety score (log units: +0.69 = ×2 better) →</text>'
    )
    if g.trend is not None:
        x1, y1, x2, y2 = g.trend
        parts.append(
            f'<line class="chart__trend" x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}">'
            f"<title>trend of safety on capability across findings</title></line>"
        )
    for placed in g.points:
        p: ScatterPoint = placed["point"]
        cx, cy = placed["cx"], placed["cy"]
        whiskers = []
        if placed["x_low"] is not None and placed["x_high"] is not None:
            css = "chart__whisker chart__whisker--clipped" if placed["x_clipped"] else "chart__whisker"
            whiskers.append(
                f'<line class="{css}" x1="{_n(placed["x_low"])}" x2="{_n(placed["x_high"])}" '
                f'y1="{_n(cy)}" y2="{_n(cy)}"/>'
            )
        if placed["y_low"] is not None and placed["y_high"] is not None:
            css = "chart__whisker chart__whisker--clipped" if placed["y_clipped"] else "chart__whisker"
            whiskers.append(
                f'<line class="{css}" x1="{_n(cx)}" x2="{_n(cx)}" y1="{_n(placed["y_low"])}" '
                f'y2="{_n(placed["y_high"])}"/>'
            )
        label = (
            f"{p.title}: safety {fmt_log(p.y)} ({factor_text(p.y)}), capability {fmt_log(p.x)} "
            f"({factor_text(p.x)}), {p.lean}"
        )
        parts.append(
            f'<a class="chart__point chart__point--{escape(p.lean)}" href="{escape(p.href)}" '
            f'data-finding="{p.finding}" aria-label="{escape(label)}">'
            f"<title>{escape(label)}</title>{''.join(whiskers)}"
            f'<circle cx="{_n(cx)}" cy="{_n(cy)}" r="6"/></a>'
        )
    plotted = len(g.points)
    return _svg(
        b["width"], b["height"],
        f"Safety against capability score in log units, {plotted} finding(s)", parts, "chart--scatter",
    )
