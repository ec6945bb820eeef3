"""Reading effects: one finding, the landscape across findings, a theory's lineage roll-up.

Visibility always goes through ``registry.findings.selectors.finding_list``. Per-finding numbers
come from the ``FindingEffects`` cache (never computed here: reads never write); the cross-finding
statistics are computed here from those numbers with :mod:`registry.effects.stats`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet
from scipy import stats as scipy_stats

from plugins.registry import PluginNotFound, PluginUnavailable, get_plugin
from registry.effects import stats
from registry.effects.models import FindingEffects
from registry.findings.models import Finding
from registry.findings.selectors import finding_list
from registry.reproductions.models import Experiment, Measurement, Reproduction, Run

LEANS = ("safety-leaning", "capability-leaning", "dual", "neither")
#: The capabilities correlation is withheld below this many runs (each run gives two models).
MIN_CORRELATION_OBSERVATIONS = 10
#: Correlations and trends across findings are shown only with at least this many findings.
MIN_LANDSCAPE_FINDINGS = 5


# ---------------------------------------------------------------- one finding


def _no_effects(finding: Finding) -> dict[str, Any]:
    """What a finding shows before any recompute has stored its effects."""
    return {
        "finding": finding.pk,
        "status": finding.status,
        "n_runs": 0,
        "run_ids": [],
        "evidence_rungs": [],
        "experiments": [],
        "metrics": [],
        "claims": [],
        "axis_scores": {"safety": None, "capability": None},
        "lean": "neither",
    }


def _effects_for(findings: Iterable[Finding]) -> dict[int, dict[str, Any]]:
    """Effects of these findings by id, exactly as cached (reads never write: recomputes are
    requested by the writes that can move them and run in the worker).

    Each carries ``pending`` (a recompute is requested and not yet done: the numbers may be out
    of date), ``computed_at`` (None: never computed) and ``error`` (why the last recompute failed,
    or None).
    """
    findings = list(findings)
    rows = {
        row.finding_id: row
        for row in FindingEffects.objects.filter(finding__in=[f.pk for f in findings]).only(
            "finding_id", "data", "computed_at", "pending", "error"
        )
    }
    effects = {}
    for finding in findings:
        row = rows.get(finding.pk)
        computed = bool(row and row.data)
        effects[finding.pk] = {
            **(row.data if computed else _no_effects(finding)),
            "pending": bool(row and row.pending),
            "computed_at": row.computed_at.isoformat() if computed else None,
            "error": (row.error or None) if row else None,
        }
    return effects


def finding_effects_get(*, finding: Finding, user: Any) -> dict:
    """Effects of one finding the caller may see (the view resolved it through finding_list)."""
    return _effects_for([finding])[finding.pk]


# ---------------------------------------------------------------- points and counts


def _point(finding: Finding, data: dict[str, Any]) -> dict[str, Any]:
    scores = data.get("axis_scores") or {}
    return {
        "finding": finding.pk,
        "title": finding.title,
        "kind": finding.kind,
        "status": finding.status,
        "tags": sorted(t.name for t in finding.tags.all()),
        "plugins": sorted({e.plugin for e in finding.experiments.all() if e.retracted_at is None}),
        "safety": scores.get("safety"),
        "capability": scores.get("capability"),
        "lean": data.get("lean", "neither"),
        "evidence_rungs": data.get("evidence_rungs", []),
        "n_runs": data.get("n_runs", 0),
    }


def _lean_counts(points: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(p["lean"] for p in points)
    return {lean: counts.get(lean, 0) for lean in LEANS}


def _scored_pairs(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        p for p in points
        if p["safety"] and p["capability"]
        and p["safety"].get("score") is not None and p["capability"].get("score") is not None
    ]


def _score_correlation(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Pearson correlation of safety and capability scores across findings that have both;
    withheld below ``MIN_LANDSCAPE_FINDINGS`` (its p-value can never be below what n supports)."""
    both = _scored_pairs(points)
    return stats.correlation_with_interval(
        [p["safety"]["score"] for p in both],
        [p["capability"]["score"] for p in both],
        method="pearson",
        min_n=MIN_LANDSCAPE_FINDINGS,
    ).to_dict()


def _score_se(score: dict[str, Any]) -> float | None:
    """The score's standard error, recovered from its t interval over seeds."""
    low, high, n = score.get("ci_low"), score.get("ci_high"), score.get("n_seeds") or 0
    if low is None or high is None or n < 2:
        return None
    quantile = float(scipy_stats.t.ppf(0.5 + float(score.get("confidence") or 0.95) / 2.0, n - 1))
    return (high - low) / (2.0 * quantile)


def _differential_progress(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Hendrycks & Mazeika (2022): the trend of safety on capability across findings, and each
    finding's safety gain above that trend."""
    both = _scored_pairs(points)
    result = stats.differential_progress(
        [p["safety"]["score"] for p in both],
        [p["capability"]["score"] for p in both],
        [_score_se(p["safety"]) for p in both],
        min_n=MIN_LANDSCAPE_FINDINGS,
    ).to_dict()
    residuals = result.pop("points", None) or []
    result["findings"] = [
        {"finding": p["finding"], "title": p["title"], **residual}
        for p, residual in zip(both, residuals, strict=False)
    ]
    return result


def _fmt_interval(value: float, low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return f"{value:+.2f}"
    return f"{value:+.2f} (95% CI {low:+.2f} to {high:+.2f})"


def _summary(counts: dict[str, int], n_findings: int, n_scored: int, progress: dict[str, Any]) -> str:
    if not n_scored:
        return "No finding has measured effects yet."
    text = (
        f"Of {n_findings} finding(s), {counts['safety-leaning']} measurably improve safety only, "
        f"{counts['capability-leaning']} capability only, {counts['dual']} both and {counts['neither']} "
        f"neither ({n_findings - n_scored} of those have no measured effects yet)."
    )
    slope = progress.get("slope")
    if slope is None:
        reason = progress.get("warning") or "too few findings with both scores"
        return f"{text} No trend of safety on capability is shown: {reason}."
    above = [f for f in progress.get("findings", []) if f.get("ci_low") is not None and f["ci_low"] > 0]
    below = [f for f in progress.get("findings", []) if f.get("ci_high") is not None and f["ci_high"] < 0]
    return (
        f"{text} Across {progress['n']} findings with both scores, each log unit of capability gain comes "
        f"with {_fmt_interval(slope, progress.get('slope_ci_low'), progress.get('slope_ci_high'))} log units "
        f"of safety; {len(above)} finding(s) buy safety beyond that trend (differential progress) and "
        f"{len(below)} fall below it."
    )


# ---------------------------------------------------------------- capabilities correlation


def _arm_observations(finding_ids: list[int], plugin: str) -> dict[tuple[int, str], dict[str, tuple[int, float]]]:
    """{(run, arm): {metric: (version, value)}} for the plugin's succeeded registry runs
    (retracted experiments excluded)."""
    rows = Measurement.objects.filter(
        run__reproduction__experiment__finding_id__in=finding_ids,
        run__reproduction__experiment__plugin=plugin,
        run__reproduction__experiment__retracted_at__isnull=True,
        run__reproduction__source=Reproduction.Source.REGISTRY,
        run__state=Run.State.SUCCEEDED,
    ).values_list("run_id", "arm", "metric", "metric_version", "value", "censored")
    observations: dict[tuple[int, str], dict[str, tuple[int, float | None]]] = defaultdict(dict)
    for run_id, arm, metric, version, value, censored in rows:
        # A censored time is a bound, not a number: it never enters the PCA.
        observations[(run_id, arm)][metric] = (version, None if censored else value)
    return observations


def _plugin_correlations(finding_ids: list[int], plugin: str) -> dict[str, Any]:
    """Per safety metric, the capabilities correlation (Ren et al. 2024) across the plugin's
    registry runs in every finding the reader can see that uses it.

    Observations are (run, arm): each arm of each run is one trained model. Every metric is
    oriented so that higher is better before the PCA; the interval resamples runs (the two arms of
    a run share a seed). Only values under the installed plugin's metric versions count.
    """
    try:
        cls = get_plugin(plugin)
    except (PluginNotFound, PluginUnavailable) as exc:
        return {"plugin": plugin, "metrics": [], "warning": f"plugin unavailable: {exc}"}
    safety = [m for m in cls.metrics if m.axis.value == "safety"]
    capability = [m for m in cls.metrics if m.axis.value == "capability"]
    if not capability:
        return {"plugin": plugin, "metrics": [], "warning": "the plugin declares no capability metric"}
    observations = _arm_observations(finding_ids, plugin)
    entries = []
    for metric in safety:
        wanted = [metric, *capability]
        measured = [
            (key, values) for key, values in sorted(observations.items())
            if all(values.get(m.name, (None,))[0] == m.version for m in wanted)
        ]
        usable = [(key, values) for key, values in measured if all(values[m.name][1] is not None for m in wanted)]
        correlation = stats.capabilities_correlation(
            [values[metric.name][1] for _, values in usable],
            [[values[m.name][1] for m in capability] for _, values in usable],
            safety_higher_is_better=metric.higher_is_better,
            capability_higher_is_better=[m.higher_is_better for m in capability],
            clusters=[run_id for (run_id, _), _ in usable],
            min_n=MIN_CORRELATION_OBSERVATIONS,
        )
        entries.append(
            {
                "metric": metric.name,
                "metric_version": metric.version,
                "capability_metrics": [m.name for m in capability],
                "oriented": {m.name: ("as is" if m.higher_is_better else "negated") for m in wanted},
                "observations": len(usable),
                "censored_left_out": len(measured) - len(usable),
                "runs": len({run_id for (run_id, _), _ in usable}),
                "correlation": correlation.to_dict(),
            }
        )
    return {"plugin": plugin, "metrics": entries, "warning": None}


# ---------------------------------------------------------------- lineage roll-up


def _children(visible: QuerySet[Finding]) -> dict[int, list[int]]:
    """The lineage graph among visible findings, parent -> findings that build on it: a walk
    never passes through a finding the reader may not see."""
    ids = set(visible.values_list("id", flat=True))
    children: dict[int, list[int]] = defaultdict(list)
    for child, parent in Finding.builds_on.through.objects.values_list("from_finding_id", "to_finding_id"):
        if child in ids and parent in ids:
            children[parent].append(child)
    return children


def _descendant_depths(finding_id: int, children: dict[int, list[int]]) -> dict[int, int]:
    """Every transitive descendant with its shortest distance (1 = builds directly on it)."""
    depths: dict[int, int] = {}
    frontier = [finding_id]
    depth = 0
    while frontier:
        depth += 1
        following = []
        for node in frontier:
            for child in children.get(node, ()):
                if child not in depths and child != finding_id:
                    depths[child] = depth
                    following.append(child)
        frontier = following
    return depths


def _rollup(finding: Finding, visible: QuerySet[Finding], children: dict[int, list[int]]) -> dict[str, Any]:
    depths = _descendant_depths(finding.pk, children)
    descendants = list(visible.filter(pk__in=depths).prefetch_related("experiments"))
    effects = _effects_for(descendants)
    rows = sorted(
        ({**_point(f, effects[f.pk]), "depth": depths[f.pk]} for f in descendants),
        key=lambda row: (row["depth"], row["finding"]),
    )
    return {
        "finding": finding.pk,
        "title": finding.title,
        "kind": finding.kind,
        "descendants": rows,
        "counts": {
            "descendants": len(rows),
            "lean": _lean_counts(rows),
            "status": dict(Counter(row["status"] for row in rows)),
            "by_depth": {str(d): n for d, n in sorted(Counter(row["depth"] for row in rows).items())},
        },
    }


def rollup_get(finding: Finding, *, user: Any = None) -> dict[str, Any]:
    """A finding's downstream effects: every visible descendant (direct or transitive, via
    ``built_upon_by``) with its axis scores and lean flag, and counts. ``user=None`` sees what
    an anonymous reader sees."""
    visible = finding_list(user=user)
    return _rollup(finding, visible, _children(visible))


# ---------------------------------------------------------------- the landscape


def _landscape_findings(*, user: Any, tag: str | None, kind: str | None, plugin: str | None) -> QuerySet[Finding]:
    findings = finding_list(user=user)
    if tag:
        findings = findings.filter(tags__name=tag.strip().lower())
    if kind:
        findings = findings.filter(kind=kind)
    if plugin:
        findings = findings.filter(experiments__plugin=plugin, experiments__retracted_at__isnull=True)
    return findings.distinct().prefetch_related("experiments").order_by("id")


def landscape_get(*, user: Any, tag: str | None = None, kind: str | None = None, plugin: str | None = None) -> dict:
    """Safety vs capability for every visible finding (filtered), and the aggregate answer."""
    findings = list(_landscape_findings(user=user, tag=tag, kind=kind, plugin=plugin))
    effects = _effects_for(findings)
    points = [_point(f, effects[f.pk]) for f in findings]
    scored = [p for p in points if p["safety"] or p["capability"]]
    counts = _lean_counts(points)
    ids = [f.pk for f in findings]
    plugins = sorted(
        set(
            Experiment.objects.filter(finding_id__in=ids, retracted_at__isnull=True).values_list("plugin", flat=True)
        )
    )
    if plugin:
        plugins = [name for name in plugins if name == plugin]
    visible = finding_list(user=user)
    visible_ids = list(visible.values_list("id", flat=True))
    children = _children(visible)
    theories = [_rollup(f, visible, children) for f in findings if f.kind == Finding.Kind.THEORY]
    progress = _differential_progress(points)
    return {
        "filters": {"tag": tag, "kind": kind, "plugin": plugin},
        "findings": points,
        "aggregate": {
            "n_findings": len(points),
            "n_scored": len(scored),
            "counts": counts,
            "n_unmeasured": len(points) - len(scored),
            "score_unit": "log",
            "answer": _summary(counts, len(points), len(scored), progress),
            "safety_capability_correlation": _score_correlation(points),
            "differential_progress": progress,
        },
        "capabilities_correlation": [_plugin_correlations(visible_ids, name) for name in plugins],
        "lineage": [
            {"finding": t["finding"], "title": t["title"], "counts": t["counts"]} for t in theories
        ],
    }
