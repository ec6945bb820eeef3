"""Reading effects: one finding, the landscape across findings, a theory's lineage roll-up.

Visibility always goes through ``registry.findings.selectors.finding_list``. Per-finding numbers
come from the ``FindingEffects`` cache (computed on first read when missing); the cross-finding
statistics are computed here from those numbers with :mod:`registry.effects.stats`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from plugins.registry import PluginNotFound, PluginUnavailable, get_plugin
from registry.effects import stats
from registry.effects.models import FindingEffects
from registry.effects.services import finding_effects_recompute
from registry.findings.models import Claim, Finding
from registry.findings.selectors import finding_list
from registry.reproductions.models import Experiment, Measurement, Reproduction, Run

LEANS = ("safety-leaning", "capability-leaning", "dual", "neither")
#: The capabilities correlation warns below this many observations (runs x arms).
MIN_CORRELATION_OBSERVATIONS = 10


# ---------------------------------------------------------------- one finding


def _claim_signatures(data: dict[str, Any]) -> set[tuple]:
    return {(c["claim"], c["direction"], c["min_relative_effect"], c["margin"]) for c in data.get("claims", [])}


def _current_claim_signatures(finding_ids: list[int]) -> dict[int, set[tuple]]:
    signatures: dict[int, set[tuple]] = defaultdict(set)
    rows = Claim.objects.filter(finding_id__in=finding_ids, is_current=True).values_list(
        "finding_id", "pk", "direction", "min_relative_effect", "margin"
    )
    for finding_id, *signature in rows:
        signatures[finding_id].add(tuple(signature))
    return signatures


def _effects_for(findings: Iterable[Finding]) -> dict[int, dict[str, Any]]:
    """Effects of these findings by id, from the cache; computed (and cached) where missing or
    where the finding's current claims changed since (a claim added, superseded or edited)."""
    findings = list(findings)
    ids = [f.pk for f in findings]
    cached = dict(FindingEffects.objects.filter(finding__in=ids).values_list("finding_id", "data"))
    claims = _current_claim_signatures(ids)
    succeeded: dict[int, set[int]] = {}
    for finding_id, run_id in Run.objects.filter(
        reproduction__experiment__finding__in=ids, state=Run.State.SUCCEEDED
    ).values_list("reproduction__experiment__finding_id", "pk"):
        succeeded.setdefault(finding_id, set()).add(run_id)
    for finding in findings:
        data = cached.get(finding.pk)
        if (
            data is None
            or _claim_signatures(data) != claims.get(finding.pk, set())
            # a recomputation that failed in the worker is repaired on the next read
            or set(data.get("run_ids") or []) != succeeded.get(finding.pk, set())
        ):
            with transaction.atomic():
                cached[finding.pk] = finding_effects_recompute(finding_id=finding.pk)
    return cached


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
        "plugins": sorted({e.plugin for e in finding.experiments.all()}),
        "safety": scores.get("safety"),
        "capability": scores.get("capability"),
        "lean": data.get("lean", "neither"),
        "evidence_rungs": data.get("evidence_rungs", []),
        "n_runs": data.get("n_runs", 0),
    }


def _lean_counts(points: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(p["lean"] for p in points)
    return {lean: counts.get(lean, 0) for lean in LEANS}


def _score_correlation(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Pearson correlation of safety and capability scores across findings that have both."""
    both = [p for p in points if p["safety"] and p["capability"]]
    return stats.correlation_with_interval(
        [p["safety"]["score"] for p in both], [p["capability"]["score"] for p in both], method="pearson"
    ).to_dict()


def _summary(counts: dict[str, int], n_findings: int, n_scored: int) -> str:
    if not n_scored:
        return "No finding has measured effects yet."
    return (
        f"Of {n_findings} finding(s), {counts['safety-leaning']} significantly improve safety only, "
        f"{counts['capability-leaning']} capability only, {counts['dual']} both and {counts['neither']} "
        f"neither ({n_findings - n_scored} of those have no measured effects yet)."
    )


# ---------------------------------------------------------------- capabilities correlation


def _arm_observations(finding_ids: list[int], plugin: str) -> dict[tuple[int, str], dict[str, tuple[int, float]]]:
    """{(run, arm): {metric: (version, value)}} for the plugin's succeeded registry runs."""
    rows = Measurement.objects.filter(
        run__reproduction__experiment__finding_id__in=finding_ids,
        run__reproduction__experiment__plugin=plugin,
        run__reproduction__source=Reproduction.Source.REGISTRY,
        run__state=Run.State.SUCCEEDED,
    ).values_list("run_id", "arm", "metric", "metric_version", "value")
    observations: dict[tuple[int, str], dict[str, tuple[int, float]]] = defaultdict(dict)
    for run_id, arm, metric, version, value in rows:
        observations[(run_id, arm)][metric] = (version, value)
    return observations


def _plugin_correlations(finding_ids: list[int], plugin: str) -> dict[str, Any]:
    """Per safety metric, the capabilities correlation across the plugin's registry runs.

    Observations are (run, arm): each arm of each run is one trained model, as in Ren et al.'s
    correlation across models. Only values under the installed plugin's metric versions count.
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
        usable = [
            values for values in observations.values()
            if all(values.get(m.name, (None,))[0] == m.version for m in wanted)
        ]
        correlation = stats.capabilities_correlation(
            [values[metric.name][1] for values in usable],
            [[values[m.name][1] for m in capability] for values in usable],
            min_runs=MIN_CORRELATION_OBSERVATIONS,
        )
        entries.append(
            {
                "metric": metric.name,
                "metric_version": metric.version,
                "capability_metrics": [m.name for m in capability],
                "observations": len(usable),
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
        findings = findings.filter(experiments__plugin=plugin)
    return findings.distinct().prefetch_related("experiments").order_by("id")


def landscape_get(*, user: Any, tag: str | None = None, kind: str | None = None, plugin: str | None = None) -> dict:
    """Safety vs capability for every visible finding (filtered), and the aggregate answer."""
    findings = list(_landscape_findings(user=user, tag=tag, kind=kind, plugin=plugin))
    effects = _effects_for(findings)
    points = [_point(f, effects[f.pk]) for f in findings]
    scored = [p for p in points if p["safety"] or p["capability"]]
    counts = _lean_counts(points)
    ids = [f.pk for f in findings]
    plugins = sorted(set(Experiment.objects.filter(finding_id__in=ids).values_list("plugin", flat=True)))
    if plugin:
        plugins = [name for name in plugins if name == plugin]
    visible = finding_list(user=user)
    children = _children(visible)
    theories = [_rollup(f, visible, children) for f in findings if f.kind == Finding.Kind.THEORY]
    return {
        "filters": {"tag": tag, "kind": kind, "plugin": plugin},
        "findings": points,
        "aggregate": {
            "n_findings": len(points),
            "n_scored": len(scored),
            "counts": counts,
            "n_unmeasured": len(points) - len(scored),
            "answer": _summary(counts, len(points), len(scored)),
            "safety_capability_correlation": _score_correlation(points),
        },
        "capabilities_correlation": [_plugin_correlations(ids, name) for name in plugins],
        "lineage": [
            {"finding": t["finding"], "title": t["title"], "counts": t["counts"]} for t in theories
        ],
    }
