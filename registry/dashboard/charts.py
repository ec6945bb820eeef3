"""Small SVG charts drawn on the server: pure functions from numbers to markup.

Nothing here touches the database or the request. Each chart is split in two: a *geometry*
function that maps values to coordinates (unit-tested on its own), with a *context* function
adding the words, and a template under ``dashboard/`` (``_interval.html``, ``_dot_plot.html``,
``_scatter.html``) that draws them, so Django auto-escapes every piece of text. The one
exception is the scatter's points, drawn here for speed with every text value escaped
(``_point_markup``). The markup carries only classes; colours live in ``dashboard.css``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html import escape as html_escape
from typing import Any

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
    if factor >= 1e7:  # a score of 16+ log units: a power of ten reads better than 7+ digits
        mantissa, exponent = f"{factor:.1e}".split("e")
        return f"×{mantissa}×10^{int(exponent)}"
    return f"×{factor:,.0f}"


def factor_text(score: float) -> str:
    """What a score in log units means as a factor: +0.69 -> "×2.0 better", -0.69 -> "×2.0 worse"."""
    if not math.isfinite(score):
        return ""
    if abs(score) >= 16.2:  # over ten million: as a power of ten, exact for any score
        log10 = abs(score) / math.log(10)
        exponent = math.floor(log10)
        mantissa = 10 ** (log10 - exponent)
        if mantissa >= 9.95:
            mantissa, exponent = 1.0, exponent + 1
        return f"×{mantissa:.1f}×10^{exponent} {'better' if score > 0 else 'worse'}"
    magnitude = math.exp(abs(score))
    if magnitude < 1.005:
        return "×1.0, no change"
    return f"{fmt_factor(magnitude)} {'better' if score > 0 else 'worse'}"


def _n(value: float) -> str:
    """A coordinate as SVG text (two decimals are plenty)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _render(template: str, context: dict[str, Any]) -> SafeString:
    """A chart template rendered (auto-escaped) with its context, as markup."""
    from django.template.loader import render_to_string

    return mark_safe(render_to_string(template, context).strip())


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


def interval_context(
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
) -> dict[str, Any]:
    """What ``dashboard/_interval.html`` draws: coordinates and words, no markup.

    ``whisker`` (a two-sided interval: a line with a cap at each end), ``open_whisker`` (a
    one-sided one: an open line to the edge and a cap at the valid limit), ``estimate_x`` (the
    dot) and ``note`` (said instead of a missing estimate or bound) are each None when not drawn.
    """
    one_sided = bound in ("upper", "lower")
    if one_sided:
        limit = high if bound == "upper" else low
        g = interval_geometry(limit, limit, limit, reference=reference, domain=domain, width=width)
    else:
        g = interval_geometry(estimate, low, high, reference=reference, domain=domain, width=width)
    mid = height / 2 - 3
    described = [f"claimed {formatter(reference)}"] if g.x_reference is not None else []
    whisker = open_whisker = estimate_x = note = None
    if one_sided:
        if g.x_estimate is None:
            note = "no valid bound"
            described.insert(0, note)
        else:
            x, edge = g.x_estimate, (8.0 if bound == "upper" else width - 8.0)
            open_whisker = {"x1": min(x, edge), "x2": max(x, edge), "cap_x": x}
            described.insert(0, f"{'at most' if bound == 'upper' else 'at least'} {formatter(limit)}")
    else:
        if g.x_low is not None and g.x_high is not None:
            whisker = {"x1": g.x_low, "x2": g.x_high}
            described.insert(0, f"interval {formatter(low)} to {formatter(high)}")
        else:
            described.insert(0, "no interval")
        if g.x_estimate is not None:
            estimate_x = g.x_estimate
            described.insert(0, f"estimate {formatter(estimate)}")
        else:
            note = "no data"
            described.insert(0, "no estimate")
    return {
        "g": g,
        "title": (f"{label}: " if label else "") + ", ".join(described),
        "width": width,
        "height": height,
        "axis_x2": width - 8,
        "axis_y": height - 6,
        "mid": mid,
        "cap_top": mid - 5,
        "cap_bottom": mid + 5,
        "whisker": whisker,
        "open_whisker": open_whisker,
        "estimate_x": estimate_x,
        "note": note,
        "note_x": width / 2,
        "note_y": mid + 4,
    }


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
    Rendered by ``dashboard/_interval.html`` (auto-escaped).

    ``bound="upper"`` (only ``high`` is valid: "at most") draws an open whisker from the left
    edge to ``high``; ``bound="lower"`` (only ``low``: "at least") from ``low`` to the right edge.
    """
    return _render(
        "dashboard/_interval.html",
        interval_context(
            estimate, low, high, reference=reference, label=label, formatter=formatter, domain=domain,
            width=width, height=height, bound=bound,
        ),
    )


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


def dot_plot_context(
    values: Sequence[tuple[str, int, int, float]],
    *,
    metric: str,
    unit: str = "",
    arms: Sequence[str] | None = None,
    width: float = 300,
) -> dict[str, Any]:
    """What ``dashboard/_dot_plot.html`` draws: coordinates and words, no markup."""
    row_height, top, bottom = 26, 10, 22
    g = dot_plot_geometry(values, arms=arms, width=width, row_height=row_height, top=top)
    height = top + row_height * max(len(g.rows), 1) + bottom
    axis_y = height - bottom + 4
    by_run: dict[int, list[DotGeometry]] = {}
    for dot in g.dots:
        by_run.setdefault(dot.run, []).append(dot)
    order = list(g.rows)
    pairs = []
    for dots in by_run.values():
        dots.sort(key=lambda d: order.index(d.arm))
        pairs.extend({"x1": a.x, "y1": a.y, "x2": b.x, "y2": b.y} for a, b in zip(dots, dots[1:], strict=False))
    unit_text = f" ({unit})" if unit else ""
    return {
        "g": g,
        "title": f"{metric}{unit_text} per arm across {len(by_run)} run(s)",
        "width": width,
        "height": height,
        "top": top,
        "axis_x2": width - 12,
        "axis_y": axis_y,
        "tick_label_y": axis_y + 13,
        "ticks": [{"x": x, "text": fmt_number(value)} for value, x in g.ticks],
        "rows": [{"label": arm, "y": y + 4} for arm, y in g.rows.items()],
        "pairs": pairs,
        "dots": [
            {
                "x": dot.x,
                "y": dot.y,
                "kind": dot.arm if dot.arm in ("baseline", "intervention") else "other",
                "arm": dot.arm,
                "seed": str(dot.seed),
                "run": str(dot.run),
                "text": fmt_number(dot.value),
            }
            for dot in g.dots
        ],
    }


def dot_plot_svg(
    values: Sequence[tuple[str, int, int, float]],
    *,
    metric: str,
    unit: str = "",
    arms: Sequence[str] | None = None,
    width: float = 300,
) -> SafeString:
    """Per-arm values of one metric across seeds; lines join the arms of the same run.
    Rendered by ``dashboard/_dot_plot.html`` (auto-escaped)."""
    return _render(
        "dashboard/_dot_plot.html", dot_plot_context(values, metric=metric, unit=unit, arms=arms, width=width)
    )


# ---------------------------------------------------------------- safety vs capability scatter
#
# The geometry is computed here (pure numbers, unit-tested); the markup lives in the template
# ``dashboard/_scatter.html``, so every title and label in it is auto-escaped by Django.


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
class TrendLine:
    """The OLS trend of safety on capability (``safety = intercept + slope * capability``) and
    what its confidence band needs: ``t * s * sqrt(1/n + (x - x_mean)^2 / x_ss)``. Without the
    band's inputs (``s`` None) no band can be drawn."""

    intercept: float
    slope: float
    n: int = 0
    s: float | None = None
    x_mean: float | None = None
    x_ss: float | None = None
    t: float | None = None

    @property
    def has_band(self) -> bool:
        return bool(
            self.n >= 3 and len(finite([self.s, self.x_mean, self.x_ss, self.t])) == 4 and (self.x_ss or 0) > 0
        )

    def half_width(self, x: float) -> float | None:
        if not self.has_band:
            return None
        return self.t * self.s * math.sqrt(1.0 / self.n + (x - self.x_mean) ** 2 / self.x_ss)


SCATTER_BOX = {"width": 720, "height": 480, "left": 60, "right": 20, "top": 20, "bottom": 52, "radius": 6}
#: The phone-sized variant: narrower, the same text size (so it stays legible at 390 px).
SCATTER_BOX_NARROW = {"width": 380, "height": 420, "left": 44, "right": 10, "top": 16, "bottom": 48, "radius": 5}
#: Whiskers may widen an axis by at most this fraction of the points' span on each side; longer
#: ones are cut at the frame (and marked), so one wide interval cannot squash every point.
WHISKER_ROOM = 0.5
#: Symmetric log: ``sign(v) log10(1 + |v| / C)``, linear within about ±C log units of 0.
SYMLOG_CONSTANT = 1.0
#: A symmetric log axis is used once the largest score is at least this many log units and this
#: many times the typical (median) magnitude: the values then span decades, and a linear axis
#: squashes every ordinary finding onto the origin.
SYMLOG_MIN_MAX = 10.0
SYMLOG_MIN_RATIO = 10.0
#: Visible text labels are drawn only up to this many points (every point keeps its tooltip).
LABEL_LIMIT = 30
LABEL_CHARS = 24
CHAR_WIDTH = 6.2  # px per character at the charts' 11 px text, for label collision checks


def spans_decades(values: Iterable[float | None]) -> bool:
    """Whether these scores span decades (see ``SYMLOG_MIN_MAX`` and ``SYMLOG_MIN_RATIO``)."""
    magnitudes = sorted(abs(v) for v in finite(values) if v != 0)
    if not magnitudes:
        return False
    median = magnitudes[len(magnitudes) // 2] if len(magnitudes) % 2 else (
        (magnitudes[len(magnitudes) // 2 - 1] + magnitudes[len(magnitudes) // 2]) / 2
    )
    return magnitudes[-1] >= SYMLOG_MIN_MAX and magnitudes[-1] / max(median, 1e-12) >= SYMLOG_MIN_RATIO


def symlog(value: float, constant: float = SYMLOG_CONSTANT) -> float:
    return math.copysign(math.log10(1.0 + abs(value) / constant), value)


def symlog_inverse(value: float, constant: float = SYMLOG_CONSTANT) -> float:
    return math.copysign(constant * (10 ** min(abs(value), 300.0) - 1.0), value)


@dataclass(frozen=True)
class AxisScale:
    """Data values to pixels along one axis: linear, or symmetric log (``kind="symlog"``).
    ``domain`` is in transformed units (the data units themselves when linear)."""

    kind: str
    domain: tuple[float, float]
    span: tuple[float, float]
    do_not_call_in_templates = True  # a scale is callable: templates read its attributes

    def transform(self, value: float) -> float:
        return symlog(value) if self.kind == "symlog" else value

    def inverse(self, value: float) -> float:
        return symlog_inverse(value) if self.kind == "symlog" else value

    def __call__(self, value: float) -> float:
        (d0, d1), (r0, r1) = self.domain, self.span
        return r0 + (self.transform(value) - d0) / ((d1 - d0) or 1.0) * (r1 - r0)

    @property
    def label(self) -> str:
        return "symmetric log scale" if self.kind == "symlog" else "linear scale"

    def ticks(self) -> list[tuple[float, float]]:
        """(value, pixel) of each tick: round numbers when linear; 0, ±1, ±10, ±100... (with ±3,
        ±30... while they fit) on a symmetric log axis."""
        low, high = self.domain
        if self.kind != "symlog":
            return [(t, self(t)) for t in nice_ticks(low, high)]
        lo, hi = self.inverse(low), self.inverse(high)
        steps = [10.0**k for k in range(0, 7)]
        values = [0.0] + [sign * v for v in steps for sign in (1, -1)]
        if len([v for v in values if lo <= v <= hi]) <= 5:
            values += [sign * 3 * v for v in steps for sign in (1, -1)]
        return [(v, self(v)) for v in sorted(v for v in values if lo <= v <= hi)]


def scatter_domain(estimates: Sequence[float | None], bounds: Sequence[float | None]) -> tuple[float, float]:
    """An axis range: the estimates and 0 (padded), widened by the intervals' ends up to
    ``WHISKER_ROOM`` of that span on each side (in whatever units the values come in)."""
    low, high = axis_domain(estimates)
    room = (high - low) * WHISKER_ROOM
    ends = finite(bounds)
    if ends:
        low = max(min(low, min(ends)), low - room)
        high = min(max(high, max(ends)), high + room)
    return (low, high)


def axis_scale(
    estimates: Sequence[float | None],
    bounds: Sequence[float | None],
    span: tuple[float, float],
    kind: str | None = None,
) -> AxisScale:
    """The scale of one axis: symmetric log where the estimates span decades, else linear."""
    kind = kind or ("symlog" if spans_decades(estimates) else "linear")
    if kind == "symlog":
        estimates = [symlog(v) for v in finite(estimates)]
        bounds = [symlog(v) for v in finite(bounds)]
    return AxisScale(kind, scatter_domain(estimates, bounds), span)


def spread_overlaps(
    positions: Sequence[tuple[float, float]], *, separation: float
) -> tuple[list[tuple[float, float]], list[list[int]]]:
    """Positions moved apart where points would overlap (closer than ``separation`` px), and the
    groups of indices that overlapped. Deterministic: a group keeps its centre and its members,
    in index order, go round it on a ring (up to six) or on hexagonal rings (more)."""
    n = len(positions)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    cells: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (x, y) in enumerate(positions):
        cells[(int(x // separation), int(y // separation))].append(i)
    for (cx, cy), members in cells.items():
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for j in cells.get((cx + dx, cy + dy), ()):
                    for i in members:
                        if i < j and math.dist(positions[i], positions[j]) < separation:
                            parent[root(j)] = root(i)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[root(i)].append(i)
    placed = list(positions)
    overlapping = [sorted(g) for g in groups.values() if len(g) > 1]
    for group in sorted(overlapping):
        cx = sum(positions[i][0] for i in group) / len(group)
        cy = sum(positions[i][1] for i in group) / len(group)
        for i, (dx, dy) in zip(group, _ring_offsets(len(group), separation), strict=True):
            placed[i] = (cx + dx, cy + dy)
    return placed, sorted(overlapping)


def _ring_offsets(k: int, separation: float) -> list[tuple[float, float]]:
    if k <= 6:
        radius = separation / (2 * math.sin(math.pi / k))
        return [(radius * math.cos(-math.pi / 2 + 2 * math.pi * m / k),
                 radius * math.sin(-math.pi / 2 + 2 * math.pi * m / k)) for m in range(k)]
    offsets, ring = [(0.0, 0.0)], 1
    while len(offsets) < k:
        for m in range(6 * ring):
            angle = -math.pi / 2 + 2 * math.pi * m / (6 * ring)
            offsets.append((separation * ring * math.cos(angle), separation * ring * math.sin(angle)))
        ring += 1
    return offsets[:k]


def short_title(title: str, limit: int = LABEL_CHARS) -> str:
    title = " ".join(str(title).split())
    return title if len(title) <= limit else title[: limit - 1].rstrip() + "…"


def _boxes_overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(
    points: Sequence[tuple[float, float, str]], *, frame: tuple[float, float, float, float], radius: float
) -> list[dict[str, Any] | None]:
    """A text label beside each point (x, y, text) where one fits: right, left, above or below,
    inside ``frame`` = (left, top, right, bottom) and clear of every point and earlier label.
    None where none fits (the point keeps its tooltip and its row in the table)."""
    left, top, right, bottom = frame
    dots = [(x - radius, y - radius, x + radius, y + radius) for x, y, _ in points]
    taken: list[tuple[float, float, float, float]] = []
    labels: list[dict[str, Any] | None] = []
    for x, y, text in points:
        width = len(text) * CHAR_WIDTH
        gap = radius + 3
        candidates = [
            (x + gap, y + 4, "start", (x + gap, y - 8, x + gap + width, y + 4)),
            (x - gap, y + 4, "end", (x - gap - width, y - 8, x - gap, y + 4)),
            (x, y - gap - 2, "middle", (x - width / 2, y - gap - 12, x + width / 2, y - gap)),
            (x, y + gap + 10, "middle", (x - width / 2, y + gap, x + width / 2, y + gap + 12)),
        ]
        chosen = None
        for tx, ty, anchor, box in candidates:
            inside = box[0] >= left and box[2] <= right and box[1] >= top and box[3] <= bottom
            if inside and not any(_boxes_overlap(box, other) for other in [*taken, *dots]):
                chosen = {"x": tx, "y": ty, "anchor": anchor, "text": text}
                taken.append(box)
                break
        labels.append(chosen)
    return labels


@dataclass(frozen=True)
class ScatterGeometry:
    x_scale: AxisScale
    y_scale: AxisScale
    box: dict[str, float]
    origin: tuple[float, float]
    points: list[dict[str, Any]]
    x_ticks: list[tuple[float, float]]
    y_ticks: list[tuple[float, float]]
    overlaps: list[dict[str, Any]] = field(default_factory=list)
    trend: tuple[float, float, float, float] | None = None
    trend_path: str = ""
    band_path: str = ""
    labels_hidden: int = 0
    labelled: bool = False

    @property
    def x_domain(self) -> tuple[float, float]:
        return self.x_scale.domain

    @property
    def y_domain(self) -> tuple[float, float]:
        return self.y_scale.domain

    @property
    def n_overlapping(self) -> int:
        return sum(group["n"] for group in self.overlaps)


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


def _point_label(p: ScatterPoint) -> str:
    def axis(name: str, value: float, low: float | None, high: float | None) -> str:
        interval = f", 95% interval {fmt_log(low)} to {fmt_log(high)}" if finite([low, high]) and len(
            finite([low, high])) == 2 else ""
        return f"{name} {fmt_log(value)} ({factor_text(value)}{interval})"

    return (
        f"{p.title}: {axis('safety', p.y, p.y_low, p.y_high)}, "
        f"{axis('capability', p.x, p.x_low, p.x_high)}, {p.lean}"
    )


def _trend_paths(
    trend: TrendLine, sx: AxisScale, sy: AxisScale, steps: int = 48
) -> tuple[str, str]:
    """SVG path data of the trend (a curve on a symmetric log axis) and of its confidence band;
    pixels are kept within a generous margin of the frame (the template clips to the frame)."""
    low, high = sx.domain
    line, upper, lower = [], [], []

    def px(value: float, scale: AxisScale) -> float:
        return min(max(scale(value), -2000.0), 4000.0)

    for i in range(steps + 1):
        x = sx.inverse(low + (high - low) * i / steps)
        y = trend.intercept + trend.slope * x
        line.append((px(x, sx), px(y, sy)))
        half = trend.half_width(x)
        if half is not None:
            upper.append((px(x, sx), px(y + half, sy)))
            lower.append((px(x, sx), px(y - half, sy)))
    trend_path = "M" + " L".join(f"{_n(a)} {_n(b)}" for a, b in line)
    band_path = ""
    if upper:
        ring = upper + lower[::-1]
        band_path = "M" + " L".join(f"{_n(a)} {_n(b)}" for a, b in ring) + " Z"
    return trend_path, band_path


def scatter_geometry(
    points: Sequence[ScatterPoint],
    *,
    trend: TrendLine | tuple[float, float] | None = None,
    labels: bool | None = None,
    x_kind: str | None = None,
    y_kind: str | None = None,
    **box: float,
) -> ScatterGeometry:
    """Coordinates of every point and its whiskers (clipped to the frame, ``*_clipped`` saying
    which ends were cut); y grows upwards as on paper. Each axis is linear, or symmetric log when
    its scores span decades. Points that would overlap are spread round their shared position
    (``overlaps`` lists each group; a displaced point keeps a leader to its true position).
    ``labels``: draw text labels (default: up to ``LABEL_LIMIT`` points). ``trend``: the fitted
    trend of safety on capability, drawn with its confidence band when it has one."""
    b = {**SCATTER_BOX, **box}
    radius = b["radius"]
    shown = [p for p in points if finite([p.x]) and finite([p.y])]
    left, right, top, bottom = b["left"], b["width"] - b["right"], b["top"], b["height"] - b["bottom"]
    sx = axis_scale([p.x for p in shown], [v for p in shown for v in (p.x_low, p.x_high)], (left, right), x_kind)
    sy = axis_scale([p.y for p in shown], [v for p in shown for v in (p.y_low, p.y_high)], (bottom, top), y_kind)

    def clip(value: float, lo: float, hi: float) -> float:
        return min(max(value, min(lo, hi)), max(lo, hi))

    def opt(scale: AxisScale, value: float | None, lo: float, hi: float) -> float | None:
        return clip(scale(value), lo, hi) if finite([value]) else None

    def cut(value: float | None, scale: AxisScale) -> bool:
        return bool(finite([value])) and not (scale.domain[0] <= scale.transform(value) <= scale.domain[1])

    true_positions = [(sx(p.x), sy(p.y)) for p in shown]
    spread, groups = spread_overlaps(true_positions, separation=2 * radius + 2)
    spread = [(clip(x, left, right), clip(y, top, bottom)) for x, y in spread]
    group_of = {i: len(group) for group in groups for i in group}
    placed = []
    for i, p in enumerate(shown):
        (tx, ty), (cx, cy) = true_positions[i], spread[i]
        label = _point_label(p)
        if group_of.get(i):
            label += f" (one of {group_of[i]} overlapping points, moved apart to be seen)"
        placed.append(
            {
                "point": p,
                "finding": p.finding,
                "href": p.href,
                "lean": p.lean,
                "label": label,
                "cx": cx,
                "cy": cy,
                "tx": tx,
                "ty": ty,
                "moved": group_of.get(i, 0) > 0 and math.dist((tx, ty), (cx, cy)) > 0.5,
                "overlap": group_of.get(i, 0),
                "x_low": opt(sx, p.x_low, left, right),
                "x_high": opt(sx, p.x_high, left, right),
                "y_low": opt(sy, p.y_low, bottom, top),
                "y_high": opt(sy, p.y_high, bottom, top),
                "x_clipped": cut(p.x_low, sx) or cut(p.x_high, sx),
                "y_clipped": cut(p.y_low, sy) or cut(p.y_high, sy),
                "text": None,
            }
        )
    labelled = len(placed) <= LABEL_LIMIT if labels is None else labels
    hidden = 0
    if labelled and placed:
        texts = place_labels(
            [(d["cx"], d["cy"], short_title(d["point"].title)) for d in placed],
            frame=(left, top, right, bottom), radius=radius,
        )
        for d, text in zip(placed, texts, strict=True):
            d["text"] = text
        hidden = sum(text is None for text in texts)
    overlaps = []
    for group in groups:
        xs, ys = [spread[i][0] for i in group], [spread[i][1] for i in group]
        overlaps.append(
            {"n": len(group), "x": sum(xs) / len(xs), "y": max(min(ys) - radius - 4, top + 10),
             "findings": [shown[i].finding for i in group]}
        )
    segment, trend_path, band_path = None, "", ""
    if isinstance(trend, tuple):
        trend = TrendLine(*trend) if len(finite(trend)) == 2 else None
    if trend is not None and len(finite([trend.intercept, trend.slope])) == 2:
        x0, x1 = sx.inverse(sx.domain[0]), sx.inverse(sx.domain[1])
        segment = _clip_segment(
            sx(x0), sy(trend.intercept + trend.slope * x0), sx(x1), sy(trend.intercept + trend.slope * x1),
            (left, top, right, bottom),
        ) if sx.kind == sy.kind == "linear" else None
        trend_path, band_path = _trend_paths(trend, sx, sy)
    return ScatterGeometry(
        x_scale=sx,
        y_scale=sy,
        box=b,
        origin=(sx(0.0), sy(0.0)),
        points=placed,
        x_ticks=sx.ticks(),
        y_ticks=sy.ticks(),
        overlaps=overlaps,
        trend=segment,
        trend_path=trend_path,
        band_path=band_path,
        labels_hidden=hidden,
        labelled=labelled,
    )


def _point_markup(p: dict[str, Any], radius: float) -> str:
    """One point of the scatter: a link titled with its finding and scores, its whiskers at its
    true position, its dot (spread apart if it overlapped), a leader back to its true position.
    Every text value goes through ``html.escape`` (quotes too); the numbers are formatted here.
    Not a template: a template node per number is several times slower, and a landscape page
    draws hundreds of points twice (wide and phone-sized)."""
    tx, ty, cx, cy = _n(p["tx"]), _n(p["ty"]), _n(p["cx"]), _n(p["cy"])
    parts = []
    if p["moved"]:
        parts.append(
            f'<line class="chart__leader" x1="{tx}" y1="{ty}" x2="{cx}" y2="{cy}"/>'
            f'<circle class="chart__anchor" cx="{tx}" cy="{ty}" r="1.5"/>'
        )
    label = html_escape(p["label"])
    overlap = f' data-overlap="{int(p["overlap"])}"' if p["overlap"] else ""
    parts.append(
        f'<a class="chart__point chart__point--{html_escape(p["lean"])}" href="{html_escape(p["href"])}" '
        f'data-finding="{int(p["finding"])}"{overlap} aria-label="{label}"><title>{label}</title>'
    )
    if p["x_low"] is not None and p["x_high"] is not None:
        clipped = " chart__whisker--clipped" if p["x_clipped"] else ""
        parts.append(
            f'<line class="chart__whisker{clipped}" x1="{_n(p["x_low"])}" x2="{_n(p["x_high"])}" y1="{ty}" y2="{ty}"/>'
        )
    if p["y_low"] is not None and p["y_high"] is not None:
        clipped = " chart__whisker--clipped" if p["y_clipped"] else ""
        parts.append(
            f'<line class="chart__whisker{clipped}" x1="{tx}" x2="{tx}" y1="{_n(p["y_low"])}" y2="{_n(p["y_high"])}"/>'
        )
    parts.append(f'<circle cx="{cx}" cy="{cy}" r="{_n(radius)}"/></a>\n')
    return "".join(parts)


def _labels_markup(g: ScatterGeometry) -> SafeString:
    if not g.labelled:
        return mark_safe("")
    texts = "".join(
        f'<text class="chart__point-label" x="{_n(p["text"]["x"])}" y="{_n(p["text"]["y"])}" '
        f'text-anchor="{html_escape(p["text"]["anchor"])}">{html_escape(p["text"]["text"])}</text>'
        for p in g.points if p["text"]
    )
    return mark_safe(f'<g class="chart__labels" aria-hidden="true">{texts}</g>\n')


def scatter_context(
    points: Sequence[ScatterPoint],
    *,
    trend: TrendLine | tuple[float, float] | None = None,
    uid: str = "scatter",
    compact: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """What ``dashboard/_scatter.html`` draws: the geometry and its words."""
    box = {**(SCATTER_BOX_NARROW if compact else SCATTER_BOX), **options.pop("box", {})}
    g = scatter_geometry(points, trend=trend, **options, **box)
    b = g.box
    left, right, top, bottom = b["left"], b["width"] - b["right"], b["top"], b["height"] - b["bottom"]
    plotted = len(g.points)
    axis_note = "log units: +0.69 = ×2 better" if not compact else "log units"
    marks = mark_safe("".join(_point_markup(p, b["radius"]) for p in g.points))
    return {
        "g": g,
        "marks": marks,
        "labels": _labels_markup(g),
        "uid": uid,
        "compact": compact,
        "left": left, "right": right, "top": top, "bottom": bottom,
        "width": b["width"], "height": b["height"], "radius": b["radius"],
        "frame_width": right - left, "frame_height": bottom - top,
        "mid_x": (left + right) / 2, "mid_y": (top + bottom) / 2,
        "x_label": f"capability score ({axis_note}{'; symmetric log' if g.x_scale.kind == 'symlog' else ''}) →",
        "y_label": f"safety score ({axis_note}{'; symmetric log' if g.y_scale.kind == 'symlog' else ''}) →",
        "x_ticks": [{"x": x, "text": fmt_tick(v)} for v, x in g.x_ticks],
        "y_ticks": [{"y": y, "label_y": y + 4, "text": fmt_tick(v)} for v, y in g.y_ticks],
        "x_tick_y": bottom + 14, "y_tick_x": left - 5, "x_label_y": b["height"] - 8,
        "q_left": left + 6, "q_right": right - 6, "q_top": top + 14, "q_bottom": bottom - 6,
        "title": f"Safety against capability score in log units, {plotted} finding(s)" + "".join(
            f"; {name} on a symmetric log scale"
            for name, scale in (("capability", g.x_scale), ("safety", g.y_scale)) if scale.kind == "symlog"
        ),
        "quadrants": not compact or plotted <= 12,
    }


def fmt_tick(value: float) -> str:
    """A tick of a score axis: signed, without needless decimals (+1, -10, +0.5, 0)."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:+,.0f}"
    return f"{value:+.3g}"


def scatter_svg(
    points: Sequence[ScatterPoint], *, trend: TrendLine | tuple[float, float] | None = None, **options: Any
) -> SafeString:
    """The scatter as markup, rendered by ``dashboard/_scatter.html`` (auto-escaped)."""
    from django.template.loader import render_to_string

    return mark_safe(render_to_string("dashboard/_scatter.html", scatter_context(points, trend=trend, **options)))
