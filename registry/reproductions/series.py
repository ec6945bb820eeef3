"""Training curves on the server: checking posted ones, reading them back, thinning them for plots.

A run's curves are ``RunSeries`` rows (one per (run, arm, name)), written with the run's result
(``services.run_succeed`` / ``run_fail`` / ``run_keep_partial``, and self-reported runs). The
bounds are interp_registry.series's, the plugin SDK's: a posted curve goes through the same
``SeriesRecorder`` a worker uses, so it is thinned, never refused, for being long.
"""

from __future__ import annotations

import math
from typing import Any

from interp_registry.series import MAX_POINTS, MAX_SERIES, NAME_PATTERN, SeriesError, SeriesRecorder

from registry.errors import ApplicationError
from registry.findings.models import Finding
from registry.reproductions.models import Run, RunSeries

DEFAULT_MAX_POINTS = 500
MAX_MAX_POINTS = 5000
FINDING_MAX_CURVES = 2000  # run-curves in one finding response
#: Stored points read for one finding response (curves are read one by one until this is passed):
#: 2000 curves of 10,000 points would be 40 million Python objects, gigabytes, per page view.
FINDING_MAX_STORED_POINTS = 2_000_000


# ---------------------------------------------------------------- posted curves (self-reported)


def series_validate(series: Any, *, arms: tuple[str, ...], field: str = "series") -> list[dict[str, Any]]:
    """``[{arm, name, steps, values}]`` checked as ``ctx.log_series`` checks each point and bounded
    the same way; ApplicationError naming the field (``series[2].values``) otherwise."""
    if series is None:
        return []
    if not isinstance(series, list):
        raise ApplicationError(f"{field} must be a list of {{arm, name, steps, values}}", field=field)
    if len(series) > MAX_SERIES:
        raise ApplicationError(f"a run has at most {MAX_SERIES} curves; {field} has {len(series)}", field=field)
    recorder = SeriesRecorder(arms=arms)
    seen: set[tuple[Any, Any]] = set()
    for index, item in enumerate(series):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise ApplicationError(f"{where} must be an object {{arm, name, steps, values}}", field=where)
        unknown = sorted(set(item) - {"arm", "name", "steps", "values"})
        if unknown:
            raise ApplicationError(f"{where}: unknown fields {unknown}", field=f"{where}.{unknown[0]}")
        for key in ("arm", "name", "steps", "values"):
            if key not in item:
                raise ApplicationError(f"{where}.{key} is required", field=f"{where}.{key}")
        arm, name, steps, values = item["arm"], item["name"], item["steps"], item["values"]
        if not isinstance(arm, str) or arm not in arms:
            raise ApplicationError(f"{where}.arm must be one of {list(arms)}", field=f"{where}.arm")
        if not isinstance(name, str):
            raise ApplicationError(f"{where}.name must be a string", field=f"{where}.name")
        if (arm, name) in seen:
            raise ApplicationError(f"{where}: the curve {name!r} of arm {arm!r} is given twice", field=f"{where}.name")
        seen.add((arm, name))
        for key, value in (("steps", steps), ("values", values)):
            if not isinstance(value, list) or not value:
                raise ApplicationError(f"{where}.{key} must be a non-empty list", field=f"{where}.{key}")
        if len(steps) != len(values):
            raise ApplicationError(f"{where}: steps has {len(steps)} entries, values {len(values)}",
                                   field=f"{where}.values")
        for position, (step, value) in enumerate(zip(steps, values, strict=True)):
            if isinstance(step, bool) or not isinstance(step, int):
                raise ApplicationError(f"{where}.steps[{position}] must be an integer", field=f"{where}.steps")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ApplicationError(f"{where}.values[{position}] must be a number", field=f"{where}.values")
            try:
                finite = math.isfinite(value)
            except OverflowError:  # an integer too large for a float
                finite = False
            if not finite:
                raise ApplicationError(f"{where}.values[{position}] is not finite; curves hold finite numbers only",
                                       field=f"{where}.values")
            try:
                recorder.log(name, step, value, arm=arm)
            except SeriesError as exc:
                key = "name" if not NAME_PATTERN.match(name) else "steps"
                raise ApplicationError(f"{where}: {exc}", field=f"{where}.{key}") from None
    return recorder.series()


# ---------------------------------------------------------------- reading


def _row(curve: RunSeries) -> dict[str, Any]:
    return {"arm": curve.arm, "name": curve.name, "steps": curve.steps, "values": curve.values,
            "logged": curve.logged, "points": len(curve.steps)}


def run_series(run: Run, *, name: str | None = None, arm: str | None = None) -> list[dict[str, Any]]:
    """A run's curves as stored (one query): ``[{arm, name, steps, values, logged, points}]``."""
    query = RunSeries.objects.filter(run=run)
    if name:
        query = query.filter(name=name)
    if arm:
        query = query.filter(arm=arm)
    return [_row(curve) for curve in query.order_by("arm", "name")]


def downsample(steps: list[int], values: list[float], max_points: int) -> tuple[list[int], list[float]]:
    """At most ``max_points`` points of a curve for a plot, by min/max bucketing: the first and last
    points, and for each of ``(max_points - 2) // 2`` equal buckets of the points between, its
    lowest and highest point in step order (peaks and dips survive; deterministic)."""
    count = len(steps)
    if count <= max_points:
        return list(steps), list(values)
    inner = range(1, count - 1)
    buckets = (max_points - 2) // 2
    keep = {0, count - 1}
    if buckets == 0:
        return [steps[0], steps[-1]], [values[0], values[-1]]
    size = len(inner) / buckets
    for bucket in range(buckets):
        start = 1 + int(bucket * size)
        stop = 1 + int((bucket + 1) * size)
        if start >= stop:
            continue
        segment = range(start, stop)
        keep.add(min(segment, key=values.__getitem__))
        keep.add(max(segment, key=values.__getitem__))
    chosen = sorted(keep)
    return [steps[i] for i in chosen], [values[i] for i in chosen]


def parse_max_points(raw: Any) -> int:
    """The ``max_points`` query parameter: an integer 2..MAX_MAX_POINTS; ApplicationError naming it."""
    if raw is None or raw == "":
        return DEFAULT_MAX_POINTS
    try:
        value = int(str(raw).strip())
    except ValueError:
        value = -1
    if not 2 <= value <= MAX_MAX_POINTS:
        raise ApplicationError(f"max_points must be an integer between 2 and {MAX_MAX_POINTS}", field="max_points")
    return value


_CURVE_ORDER = ("run__reproduction__experiment_id", "name", "arm", "run_id")


def _first_within_budget(query: Any, max_curves: int) -> tuple[list[int], bool]:
    """The ids of the first curves of ``query`` (in _CURVE_ORDER) whose stored points, at most
    ``min(logged, MAX_POINTS)`` each, add up to FINDING_MAX_STORED_POINTS at most, and at most
    ``max_curves`` of them; and whether some were left out. One query, reading no points."""
    ids: list[int] = []
    total = 0
    for pk, logged in query.order_by(*_CURVE_ORDER).values_list("pk", "logged")[: max_curves + 1]:
        total += min(logged, MAX_POINTS)
        if len(ids) == max_curves or total > FINDING_MAX_STORED_POINTS:
            return ids, True
        ids.append(pk)
    return ids, False


def finding_series(
    finding: Finding, *, name: str | None = None, arm: str | None = None, max_points: int = DEFAULT_MAX_POINTS,
) -> dict[str, Any]:
    """Every curve of every run of the finding (any state: a failed run's curve is partial, its
    ``state`` says so), each thinned to ``max_points``; at most FINDING_MAX_CURVES of them, and
    FINDING_MAX_STORED_POINTS stored points in all (``truncated``). Two queries, whatever the
    number of runs. The caller checks visibility."""
    query = RunSeries.objects.filter(run__reproduction__experiment__finding=finding)
    if name:
        query = query.filter(name=name)
    if arm:
        query = query.filter(arm=arm)
    ids, truncated = _first_within_budget(query, FINDING_MAX_CURVES)
    rows = RunSeries.objects.filter(pk__in=ids).order_by(*_CURVE_ORDER).values(
        "run_id", "run__seed", "run__state", "run__reproduction__experiment_id",
        "run__reproduction__experiment__plugin", "run__reproduction__source", "arm", "name", "steps",
        "values", "logged",
    )
    out = []
    for row in rows:
        steps, values = downsample(row["steps"], row["values"], max_points)
        out.append({
            "run": row["run_id"], "seed": row["run__seed"], "state": row["run__state"],
            "experiment": row["run__reproduction__experiment_id"],
            "plugin": row["run__reproduction__experiment__plugin"],
            "self_reported": row["run__reproduction__source"] == "self_reported",
            "arm": row["arm"], "name": row["name"], "steps": steps, "values": values,
            "logged": row["logged"], "points": len(row["steps"]),
        })
    return {"finding": finding.pk, "max_points": max_points, "truncated": truncated, "series": out}


def series_bands(curves: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (experiment, name, arm): the mean and the min..max band across runs at the steps every
    run logged (succeeded runs' curves only are expected here). For the dashboard's plot."""
    groups: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
    for curve in curves:
        groups.setdefault((curve["experiment"], curve["name"], curve["arm"]), []).append(curve)
    bands = []
    for (experiment, name, arm), members in sorted(groups.items()):
        common = set(members[0]["steps"])
        for member in members[1:]:
            common &= set(member["steps"])
        steps = sorted(common)
        if not steps:
            continue
        lookups = [dict(zip(m["steps"], m["values"], strict=True)) for m in members]
        mean, low, high = [], [], []
        for step in steps:
            at = [lookup[step] for lookup in lookups]
            mean.append(sum(at) / len(at))
            low.append(min(at))
            high.append(max(at))
        bands.append({"experiment": experiment, "name": name, "arm": arm, "runs": len(members), "steps": steps,
                      "mean": mean, "low": low, "high": high})
    return bands


__all__ = [
    "DEFAULT_MAX_POINTS", "FINDING_MAX_CURVES", "MAX_MAX_POINTS", "MAX_POINTS", "downsample", "finding_series",
    "parse_max_points", "run_series", "series_bands", "series_validate",
]


def finding_curve_bands(
    finding: Finding, *, max_curves: int = FINDING_MAX_CURVES, max_seeds: int = 0
) -> list[dict[str, Any]]:
    """Per (experiment, curve name, arm) of the finding's succeeded runs: the mean across runs and
    the band from the lowest to the highest run, at the steps every run logged (``series_bands``);
    retracted experiments left out, stored points bounded as in ``finding_series``. Two queries.
    With ``max_seeds``, each band also carries its first runs' own curves at the band's steps:
    ``seeds: [{seed, run, values}]`` in run order, at most that many. For the dashboard's plots;
    the caller checks visibility."""
    query = RunSeries.objects.filter(
        run__reproduction__experiment__finding=finding, run__state=Run.State.SUCCEEDED,
        run__reproduction__experiment__retracted_at__isnull=True,  # as in the effects: never pooled
    )
    ids, _ = _first_within_budget(query, max_curves)
    rows = RunSeries.objects.filter(pk__in=ids).order_by(*_CURVE_ORDER).values(
        "run_id", "run__seed", "run__reproduction__experiment_id", "run__reproduction__experiment__plugin",
        "arm", "name", "steps", "values",
    )
    curves = []
    plugins: dict[int, str] = {}
    members: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        experiment = row["run__reproduction__experiment_id"]
        plugins[experiment] = row["run__reproduction__experiment__plugin"]
        curve = {"experiment": experiment, "name": row["name"], "arm": row["arm"], "steps": row["steps"],
                 "values": row["values"], "run": row["run_id"], "seed": row["run__seed"]}
        curves.append(curve)
        members.setdefault((experiment, row["name"], row["arm"]), []).append(curve)
    bands = series_bands(curves)
    for band in bands:
        band["plugin"] = plugins[band["experiment"]]
        if max_seeds:
            band["seeds"] = []
            for curve in members[(band["experiment"], band["name"], band["arm"])][:max_seeds]:
                lookup = dict(zip(curve["steps"], curve["values"], strict=True))
                band["seeds"].append({"seed": curve["seed"], "run": curve["run"],
                                      "values": [lookup[step] for step in band["steps"]]})
    return bands
