"""The finding page's training curves: geometry for inline SVG plots (the template draws them,
auto-escaped). Data from ``registry.reproductions.series.finding_curve_bands``; nothing here
queries beyond that one call."""

from __future__ import annotations

from typing import Any

from registry.findings.models import Finding
from registry.reproductions.series import finding_curve_bands

WIDTH, HEIGHT = 360, 180
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 10, 24  # margins for the axis labels
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
MAX_PLOTS = 12
MAX_PLOT_POINTS = 200
ARM_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")


def _thin(indices: int, limit: int) -> list[int]:
    """At most ``limit`` evenly spread indices of ``range(indices)``, the first and last included."""
    if indices <= limit:
        return list(range(indices))
    return sorted({round(i * (indices - 1) / (limit - 1)) for i in range(limit)})


def _label(value: float) -> str:
    return f"{value:.3g}"


def curve_plots(bands: list[dict[str, Any]], *, max_plots: int = MAX_PLOTS) -> list[dict[str, Any]]:
    """One plot per (experiment, curve name), one mean line and band per arm, in a shared frame:
    ``{name, plugin, experiment, width, height, x/y labels, arms: [{arm, runs, colour, line, band}]}``
    where ``line`` and ``band`` are SVG point lists (numbers only)."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for band in bands:
        groups.setdefault((band["experiment"], band["name"]), []).append(band)
    plots = []
    for (experiment, name), arms in list(groups.items())[:max_plots]:
        x_low = min(b["steps"][0] for b in arms)
        x_high = max(b["steps"][-1] for b in arms)
        y_low = min(min(b["low"]) for b in arms)
        y_high = max(max(b["high"]) for b in arms)
        if x_high == x_low:
            x_high = x_low + 1
        if y_high == y_low:
            y_low, y_high = y_low - 0.5, y_high + 0.5

        def x(step: float, lo: float = x_low, hi: float = x_high) -> str:
            return f"{LEFT + (step - lo) / (hi - lo) * PLOT_W:.1f}"

        def y(value: float, lo: float = y_low, hi: float = y_high) -> str:
            return f"{TOP + (1 - (value - lo) / (hi - lo)) * PLOT_H:.1f}"

        drawn = []
        for index, band in enumerate(arms):
            keep = _thin(len(band["steps"]), MAX_PLOT_POINTS)
            steps = [band["steps"][i] for i in keep]
            line = " ".join(f"{x(s)},{y(band['mean'][i])}" for s, i in zip(steps, keep, strict=True))
            upper = [f"{x(s)},{y(band['high'][i])}" for s, i in zip(steps, keep, strict=True)]
            lower = [f"{x(s)},{y(band['low'][i])}" for s, i in zip(steps, keep, strict=True)]
            drawn.append({"arm": band["arm"], "runs": band["runs"], "colour": ARM_COLOURS[index % len(ARM_COLOURS)],
                          "line": line, "band": " ".join(upper + lower[::-1])})
        plots.append({
            "name": name, "plugin": arms[0]["plugin"], "experiment": experiment, "width": WIDTH, "height": HEIGHT,
            "left": LEFT, "right": WIDTH - RIGHT, "top": TOP, "bottom": HEIGHT - BOTTOM,
            "x_low": _label(x_low), "x_high": _label(x_high), "y_low": _label(y_low), "y_high": _label(y_high),
            "arms": drawn,
        })
    return plots


def finding_curve_plots(finding: Finding) -> list[dict[str, Any]]:
    return curve_plots(finding_curve_bands(finding))
