"""Training curves on the dashboard: geometry for inline SVG plots (dashboard/_curve_figure.html
draws them, auto-escaped).

The finding page: per (experiment, curve name), one plot with, per arm, the mean across its
succeeded runs (line), the range from the lowest to the highest run (band), and each run's own
curve (thin line, with points whose ``<title>`` names the seed and value, so hovering shows each
seed). Two queries, whatever the number of runs (the selection is
``registry.reproductions.series.finding_curve_bands``'s, with each run's seed).

The run page: per curve name, one plot with one line per arm (points titled with the value), from
``run_series`` (one query)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from registry.findings.models import Finding
from registry.reproductions.models import Run
from registry.reproductions.series import finding_curve_bands, run_series

WIDTH, HEIGHT = 360, 180
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 10, 24  # margins for the axis labels
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
MAX_PLOTS = 12
MAX_PLOT_POINTS = 200
ARM_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")
#: Per arm of a finding's plot, the runs drawn one by one (the band and mean use them all), the
#: points of each run's thin line, and its points that carry a hover title: bounded page weight.
MAX_SEED_LINES = 10
SEED_LINE_POINTS = 50
SEED_HOVER_POINTS = 12


def _thin(indices: int, limit: int) -> list[int]:
    """At most ``limit`` evenly spread indices of ``range(indices)``, the first and last included."""
    if indices <= limit:
        return list(range(indices))
    return sorted({round(i * (indices - 1) / (limit - 1)) for i in range(limit)})


def _label(value: float) -> str:
    return f"{value:.3g}"


def _frame(x_low: float, x_high: float, y_low: float, y_high: float) -> tuple[Callable, Callable, dict[str, Any]]:
    """The x and y of a point in the plot (SVG text), and the frame's labels and edges."""
    if x_high == x_low:
        x_high = x_low + 1
    if y_high == y_low:
        y_low, y_high = y_low - 0.5, y_high + 0.5

    def x(step: float) -> str:
        return f"{LEFT + (step - x_low) / (x_high - x_low) * PLOT_W:.1f}"

    def y(value: float) -> str:
        return f"{TOP + (1 - (value - y_low) / (y_high - y_low)) * PLOT_H:.1f}"

    frame = {
        "width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "top": TOP, "bottom": HEIGHT - BOTTOM,
        "x_low": _label(x_low), "x_high": _label(x_high), "y_low": _label(y_low), "y_high": _label(y_high),
    }
    return x, y, frame


def _polyline(x: Callable, y: Callable, steps: list[int], values: list[float], limit: int) -> str:
    return " ".join(f"{x(steps[i])},{y(values[i])}" for i in _thin(len(steps), limit))


def _points(x: Callable, y: Callable, steps: list[int], values: list[float], what: str) -> list[dict[str, str]]:
    """Hover points: ``{x, y, title}``, the title ``"<what>: <value> at step <step>"``."""
    return [{"x": x(steps[i]), "y": y(values[i]), "title": f"{what}: {_label(values[i])} at step {steps[i]}"}
            for i in _thin(len(steps), SEED_HOVER_POINTS)]


def curve_plots(bands: list[dict[str, Any]], *, max_plots: int = MAX_PLOTS) -> list[dict[str, Any]]:
    """One plot per (experiment, curve name), one mean line and band per arm, in a shared frame:
    ``{name, plugin, experiment, width, height, x/y labels, arms: [{arm, runs, colour, line, band,
    seeds, seeds_left_out}]}`` where ``line`` and ``band`` are SVG point lists (numbers only) and
    ``seeds`` (from a band's optional ``seeds``: ``[{seed, run, values}]`` at the band's steps)
    ``[{seed, run, line, points: [{x, y, title}]}]``, at most MAX_SEED_LINES per arm."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for band in bands:
        groups.setdefault((band["experiment"], band["name"]), []).append(band)
    plots = []
    for (experiment, name), arms in list(groups.items())[:max_plots]:
        x, y, frame = _frame(min(b["steps"][0] for b in arms), max(b["steps"][-1] for b in arms),
                             min(min(b["low"]) for b in arms), max(max(b["high"]) for b in arms))
        drawn = []
        for index, band in enumerate(arms):
            steps = band["steps"]
            keep = _thin(len(steps), MAX_PLOT_POINTS)
            upper = [f"{x(steps[i])},{y(band['high'][i])}" for i in keep]
            lower = [f"{x(steps[i])},{y(band['low'][i])}" for i in keep]
            seeds = band.get("seeds") or []
            drawn.append({
                "arm": band["arm"], "runs": band["runs"], "colour": ARM_COLOURS[index % len(ARM_COLOURS)],
                "line": _polyline(x, y, steps, band["mean"], MAX_PLOT_POINTS), "band": " ".join(upper + lower[::-1]),
                "seeds": [{
                    "seed": seed["seed"], "run": seed["run"],
                    "line": _polyline(x, y, steps, seed["values"], SEED_LINE_POINTS),
                    "points": _points(x, y, steps, seed["values"],
                                      f"{band['arm']}, seed {seed['seed']} (run #{seed['run']})"),
                } for seed in seeds[:MAX_SEED_LINES]],
                "seeds_left_out": max(0, band["runs"] - min(len(seeds), MAX_SEED_LINES)) if seeds else 0,
            })
        plots.append({"name": name, "plugin": arms[0]["plugin"], "experiment": experiment, **frame, "arms": drawn})
    return plots


def finding_curve_plots(finding: Finding) -> list[dict[str, Any]]:
    return curve_plots(finding_curve_bands(finding, max_seeds=MAX_SEED_LINES))


def run_curve_plots(run: Run, *, max_plots: int = MAX_PLOTS) -> list[dict[str, Any]]:
    """The run's own curves (one query): per curve name, one plot with one line per arm (the
    arm's points titled with their values); ``{name, width, height, x/y labels, arms: [{arm,
    colour, line, points}]}``."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for curve in run_series(run):
        if curve["steps"]:
            by_name.setdefault(curve["name"], []).append(curve)
    plots = []
    for name, arms in sorted(by_name.items())[:max_plots]:
        x, y, frame = _frame(min(min(c["steps"]) for c in arms), max(max(c["steps"]) for c in arms),
                             min(min(c["values"]) for c in arms), max(max(c["values"]) for c in arms))
        drawn = [{
            "arm": curve["arm"], "colour": ARM_COLOURS[index % len(ARM_COLOURS)],
            "line": _polyline(x, y, curve["steps"], curve["values"], MAX_PLOT_POINTS),
            "points": _points(x, y, curve["steps"], curve["values"], curve["arm"]),
        } for index, curve in enumerate(arms)]
        plots.append({"name": name, **frame, "arms": drawn})
    return plots
