"""Data shaping for the dashboard's templates: plain dicts and lists, no HTTP.

Visibility always starts from ``registry.findings.selectors.finding_list(user=...)``. The
effects come from ``registry.effects.selectors``; their dicts are read with ``.get`` so a
finding without measured effects (or an older cache entry) renders as "no data yet".
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Exists, F, Max, OuterRef, QuerySet, Subquery, Window
from django.db.models.functions import RowNumber
from django.http import Http404
from django.urls import reverse

from plugins.registry import all_plugins
from registry.dashboard import charts
from registry.effects.models import FindingEffects
from registry.findings.markdown import render_markdown
from registry.findings.models import Claim, Finding, Tag
from registry.findings.selectors import (
    finding_filter_plugin,
    finding_filter_tag,
    finding_list,
    finding_search_filter,
    lineage_walk,
)
from registry.reproductions.models import TERMINAL_STATES, Experiment, Reproduction, Run, WorkerPresence
from registry.reproductions.selectors import reproduction_outcome, reproduction_state, run_list

ACTIVE_STATES = frozenset({Run.State.QUEUED, Run.State.RUNNING})
LEAN_LABELS = {
    "safety-leaning": "Safety-leaning",
    "capability-leaning": "Capability-leaning",
    "dual": "Safety and capability",
    "neither": "Neither",
}
XRISK_LABELS = {
    "expected_safety_effects": "Expected safety effects",
    "expected_capability_effects": "Expected capability effects",
    "hazards": "Hazards",
    "dual_use": "Dual use",
    "notes": "Notes",
}
ARXIV_ID = re.compile(r"^(?:arxiv:)?(\d{4}\.\d{4,5}(?:v\d+)?)$", re.IGNORECASE)


# ---------------------------------------------------------------- choices and lookups


def visible_tags(*, user: Any) -> list[str]:
    """Tag names used by findings this user may read (restricted findings' tags stay hidden)."""
    # per tag, EXISTS a visible finding with it: stops at the first one (no join of every
    # finding's tags and no DISTINCT)
    visible = finding_list(user=user).prefetch_related(None).filter(pk=OuterRef("finding_id"))
    used = Finding.tags.through.objects.filter(tag_id=OuterRef("pk")).filter(Exists(visible))
    return list(Tag.objects.filter(Exists(used)).order_by("name").values_list("name", flat=True))


def plugin_names() -> list[str]:
    return sorted(all_plugins())


def finding_get(*, user: Any, pk: int) -> Finding:
    """A finding the user may read, else 404 (a restricted finding is not even confirmed to exist)."""
    finding = finding_list(user=user).filter(pk=pk).first()
    if finding is None:
        raise Http404("no such finding")
    return finding


def run_get(*, user: Any, pk: int) -> Run:
    run = run_list(user=user).select_related("reproduction__experiment__finding", "reproduction__requested_by")
    run = run.filter(pk=pk).first()
    if run is None:
        raise Http404("no such run")
    return run


# ---------------------------------------------------------------- findings list


def finding_search(
    *, user: Any, q: str = "", kind: str = "", status: str = "", tag: str = "", plugin: str = ""
) -> QuerySet[Finding]:
    """The findings list's filters, as the API's (full-text search, EXISTS for tags and plugins:
    no DISTINCT, so a page is an index walk even over 100,000 findings)."""
    findings = finding_list(user=user)
    if q:
        findings = finding_search_filter(findings, q)
    if kind:
        findings = findings.filter(kind=kind)
    if status:
        findings = findings.filter(status=status)
    if tag:
        findings = finding_filter_tag(findings, tag)
    if plugin:
        findings = finding_filter_plugin(findings, plugin)
    return findings.prefetch_related("experiments").order_by("-created_at", "-id")


def lean_badge(effects: dict[str, Any] | None) -> dict[str, str] | None:
    """The lean flag of a finding with measured effects; None when nothing was measured yet."""
    if not effects:
        return None
    scores = effects.get("axis_scores") or {}
    if not (scores.get("safety") or scores.get("capability")):
        return None
    lean = effects.get("lean") or "neither"
    return {"value": lean, "label": LEAN_LABELS.get(lean, lean)}


def finding_rows(findings: list[Finding]) -> list[dict[str, Any]]:
    """One row per finding of a list page, with its lean flag from the effects cache (never
    computed here: a list page stays a read)."""
    cached = dict(
        FindingEffects.objects.filter(finding__in=[f.pk for f in findings]).values_list("finding_id", "data")
    )
    return [
        {
            "finding": finding,
            "tags": [t.name for t in finding.tags.all()],
            "plugins": sorted({e.plugin for e in finding.experiments.all()}),
            "lean": lean_badge(cached.get(finding.pk)),
        }
        for finding in findings
    ]


# ---------------------------------------------------------------- one finding


def reference_link(reference: str) -> dict[str, str | None]:
    """A reference as text and, where it has one, the address of its page."""
    text = str(reference).strip()
    lowered = text.lower()
    href = None
    if lowered.startswith(("http://", "https://")):
        href = text
    elif lowered.startswith("doi:"):
        href = "https://doi.org/" + text[4:].strip()
    elif lowered.startswith("10.") and "/" in text:
        href = "https://doi.org/" + text
    elif match := ARXIV_ID.match(text):
        href = "https://arxiv.org/abs/" + match.group(1)
    return {"text": text, "href": href}


def xrisk_items(sheet: Any) -> list[dict[str, str]]:
    """The authors' x-risk sheet as labelled items, known fields first."""
    if not isinstance(sheet, dict):
        return []
    items = []
    for key in [*XRISK_LABELS, *sorted(set(sheet) - set(XRISK_LABELS))]:
        if key not in sheet or sheet[key] in (None, ""):
            continue
        value = sheet[key]
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif not isinstance(value, str):
            value = json.dumps(value)
        items.append({"label": XRISK_LABELS.get(key, key.replace("_", " ").capitalize()), "value": value})
    return items


SCALE_LABELS = {
    "ratio": "ratio scale",
    "proportion": "proportion",
    "difference": "difference scale",
}
STATUS_HELP = {
    "unreproduced": "No data yet: no succeeded run has measured a claimed metric",
    "undecided": "Measured, but no claim is decided yet",
    "reproduced": "Every current claim confirmed",
    "partially_reproduced": "Some claims confirmed, the others not decided yet",
    "failed_to_reproduce": "Some claims refuted, none confirmed",
    "contested": "Some claims confirmed and others refuted, or experiments or reproductions disagree",
}
VERDICT_LABELS = {"confirmed": "confirmed", "refuted": "refuted", "inconclusive": "inconclusive"}
#: The registry's minimum seeds for a verdict, when the cache does not say (older entries).
DEFAULT_MIN_SEEDS = 3


def _finite(value: Any) -> float | None:
    return (charts.finite([value]) or [None])[0]


def status_help(status: str) -> str:
    return STATUS_HELP.get(status, "Status, derived from the claims' verdicts")


def _threshold_text(value: float, *, unit: str, scale: str | None) -> str:
    """A claim's threshold in its unit: relative 0.9 -> "90%"; absolute on a proportion 0.3 ->
    "30 points"; absolute elsewhere: the number in metric units."""
    if unit == "absolute":
        if scale == "proportion":
            return f"{value * 100:g} points"
        return f"{value:g}" + (" (metric units)" if scale != "difference" else "")
    return f"{value * 100:g}%"


def claim_expectation(claim: dict[str, Any], scale: str | None = None) -> str:
    """The claim in words, in its own unit (``threshold_unit``: relative, or absolute)."""
    direction = claim.get("direction")
    unit = claim.get("threshold_unit") or "relative"
    if direction == Claim.Direction.NON_INFERIOR:
        margin = claim.get("margin") or 0.0
        return f"not worse by more than {_threshold_text(margin, unit=unit, scale=scale)}"
    effect = claim.get("min_relative_effect") or 0.0
    if direction == Claim.Direction.DECREASE:
        return f"decreases by at least {_threshold_text(effect, unit=unit, scale=scale)}"
    if direction == Claim.Direction.INCREASE:
        return f"increases by at least {_threshold_text(effect, unit=unit, scale=scale)}"
    return str(direction or "")


def claim_reference(claim: dict[str, Any], higher_is_better: bool | None) -> float | None:
    """The claimed change as a point on the effect axis (a dashed mark on the plot), in the
    claim's unit (a fraction of the baseline, or metric units / points as fractions)."""
    direction = claim.get("direction")
    if direction == Claim.Direction.DECREASE and claim.get("min_relative_effect") is not None:
        return -claim["min_relative_effect"]
    if direction == Claim.Direction.INCREASE and claim.get("min_relative_effect") is not None:
        return claim["min_relative_effect"]
    if direction == Claim.Direction.NON_INFERIOR and claim.get("margin") is not None and higher_is_better is not None:
        return -claim["margin"] if higher_is_better else claim["margin"]
    return None


def confidence_label(confidence: Any) -> str:
    try:
        return f"{float(confidence) * 100:.4g}% CI"
    except (TypeError, ValueError):
        return "95% CI"


def _natural_mode(effect: dict[str, Any]) -> str:
    """How an effect is shown by default: ratio metrics as a relative change (from the log
    ratio), proportions in points, differences in metric units. An older cache entry without
    ``effect_unit`` shows its relative change when it has one."""
    unit = effect.get("effect_unit")
    if unit == "log_ratio":
        return "relative"
    if unit == "points":
        return "points"
    if unit == "difference":
        return "difference"
    return "relative" if effect.get("relative_change") is not None else "difference"


def _mode_for_claim(effect: dict[str, Any], threshold_unit: str) -> str:
    """The unit a claim's effect is shown in: the claim's own where the effect has it."""
    natural = _natural_mode(effect)
    if threshold_unit == "relative":
        return "relative" if effect.get("relative_change") is not None else natural
    return natural if natural in ("points", "difference") else "relative"


MODE_LABELS = {"relative": "relative change", "points": "points", "difference": "difference"}
MODE_FORMATTERS = {"relative": charts.fmt_percent, "points": charts.fmt_points, "difference": charts.fmt_number}


def effect_view(
    effect: dict[str, Any] | None,
    *,
    label: str,
    reference: float | None = None,
    mode: str | None = None,
) -> dict[str, Any] | None:
    """An effect estimate for a table row, in ``mode`` (default: the metric's natural unit):
    ``relative`` (percent change, its interval from the log ratios), ``points`` (difference of
    proportions) or ``difference`` (metric units); its interval as an inline SVG plot; censored
    effects as one-sided bounds with the seeds that reached the event; deterministic effects
    flagged."""
    if not effect:
        return None
    mode = mode or _natural_mode(effect)
    if mode == "relative" and effect.get("relative_change") is None:
        mode, reference = ("points" if effect.get("effect_unit") == "points" else "difference"), None
    if mode == "relative":
        estimate = effect.get("relative_change")
        low, high = effect.get("relative_ci_low"), effect.get("relative_ci_high")
    else:
        estimate = effect.get("effect", effect.get("mean_difference"))
        low, high = effect.get("effect_ci_low"), effect.get("effect_ci_high")
    estimate, low, high = _finite(estimate), _finite(low), _finite(high)
    formatter = MODE_FORMATTERS[mode]
    censored = effect.get("censored") if isinstance(effect.get("censored"), dict) else None
    bound = (censored or {}).get("bound") or "exact"
    reached = None
    if censored:
        n = censored.get("n", effect.get("n"))
        reached = f"reached {censored.get('reached_baseline')}/{n} → {censored.get('reached_intervention')}/{n}"
    text, interval_text, svg_bound = (formatter(estimate) if estimate is not None else "n/a"), None, None
    if bound == "upper":
        text = f"at most {formatter(high)}" if high is not None else "no valid bound"
        svg_bound = "upper"
    elif bound == "lower":
        text = f"at least {formatter(low)}" if low is not None else "no valid bound"
        svg_bound = "lower"
    elif bound == "none":
        text = "no valid interval"
        svg_bound = "upper"  # draws "no valid bound"
        high = low = None
    elif low is not None and high is not None:
        interval_text = f"{formatter(low)} to {formatter(high)}"
    secondary = None
    if mode == "points" and effect.get("relative_change") is not None and bound == "exact":
        secondary = f"relative {charts.fmt_percent(effect['relative_change'])}"
    own_notes = ("deterministic:", "censored:", "only the upper end", "only the lower end", "no side of the interval")
    return {
        "mode": mode,
        "mode_label": MODE_LABELS[mode],
        "estimate": estimate,
        "low": low,
        "high": high,
        "text": text,
        "interval_text": interval_text,
        "secondary": secondary,
        "bound": bound,
        "reached": reached,
        "deterministic": bool(effect.get("deterministic")),
        "n": effect.get("n"),
        "p_value": effect.get("p_value"),
        "p_method": "sign test" if bound != "exact" else ("t-test" if effect.get("p_value") is not None else ""),
        "warnings": [w for w in effect.get("warnings") or [] if not str(w).startswith(own_notes)],
        "svg": charts.interval_svg(
            estimate, low, high, reference=reference, label=label, formatter=formatter, bound=svg_bound
        ),
    }


def _metric_index(effects: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    return {
        (m.get("experiment"), m.get("plugin"), m.get("metric"), m.get("metric_version")): m
        for m in effects.get("metrics") or []
    }


def _declared_scales(finding: Finding) -> dict[str, dict[str, Any]]:
    """What the installed plugins of the finding's experiments declare per metric (scale,
    orientation), for claims without data yet."""
    declared: dict[str, dict[str, Any]] = {}
    plugins = all_plugins()
    for name in sorted({e.plugin for e in finding.experiments.all()}):
        entry = plugins.get(name)
        for metric in getattr(getattr(entry, "experiment", None), "metrics", ()) or ():
            declared.setdefault(
                metric.name,
                {"scale": str(getattr(metric, "scale", "") or ""), "higher_is_better": metric.higher_is_better},
            )
    return declared


def _verdict_state(
    entry: dict[str, Any], verdict: str, min_seeds: int, *, awaiting: bool = False
) -> tuple[str, str]:
    """(label, css modifier) of a claim's verdict: before data, "awaiting data" while runs are
    queued or running (``awaiting``), else "no data yet"; below the registry's minimum seeds,
    "not enough seeds (min k)", never a bare "inconclusive"."""
    effect = entry.get("effect") or {}
    has_data = entry.get("has_data", bool(effect))
    if not has_data:
        return ("awaiting data", "none") if awaiting else ("no data yet", "none")
    if verdict == "inconclusive":
        n = effect.get("n")
        if isinstance(n, int) and n < min_seeds:
            return f"not enough seeds (min {min_seeds})", "seeds"
        if entry.get("experiments_disagree"):
            return "experiments disagree", "disagree"
    return VERDICT_LABELS.get(verdict, verdict), verdict


def claim_rows(finding: Finding, effects: dict[str, Any], *, awaiting: bool = False) -> list[dict[str, Any]]:
    """Current claims next to what the reproductions measured, each in the claim's unit;
    ``awaiting``: some run of the finding is queued or running (a claim without data then reads
    "awaiting data", not "inconclusive")."""
    entries = {c.get("claim"): c for c in effects.get("claims") or []}
    metrics = _metric_index(effects)
    declared = _declared_scales(finding)
    min_seeds = effects.get("min_seeds") or DEFAULT_MIN_SEEDS
    confidence = confidence_label(effects.get("claims_confidence", effects.get("confidence")))
    rows = []
    for claim in finding.claims.filter(is_current=True).select_related("verdict").order_by("id"):
        entry = entries.get(claim.pk) or {}
        unit = entry.get("threshold_unit") or getattr(claim, "threshold_unit", None) or "relative"
        base = {
            "direction": claim.direction,
            "min_relative_effect": claim.min_relative_effect,
            "margin": claim.margin,
            "threshold_unit": unit,
        }
        per_experiment = [e for e in entry.get("experiments") or [] if isinstance(e, dict)]
        shown = next((e for e in per_experiment if e.get("experiment") == entry.get("experiment")), {})
        metric = metrics.get((entry.get("experiment"), entry.get("plugin"), claim.metric, entry.get("metric_version")))
        metric = metric or {}
        scale = shown.get("scale") or metric.get("scale") or (declared.get(claim.metric) or {}).get("scale")
        higher_is_better = metric.get("higher_is_better", (declared.get(claim.metric) or {}).get("higher_is_better"))
        stored = getattr(claim, "verdict", None)
        verdict = entry.get("verdict") or (stored.verdict if stored else "inconclusive")
        label, css = _verdict_state(entry, verdict, min_seeds, awaiting=awaiting)
        effect = entry.get("effect")
        view = None
        if effect:
            mode = _mode_for_claim(effect, unit)
            matches = (unit == "relative") == (mode == "relative")
            view = effect_view(
                effect,
                label=f"{claim.metric}, {confidence}",
                reference=claim_reference(base, higher_is_better) if matches else None,
                mode=mode,
            )
        reason = shown.get("reason")
        warnings = [w for w in [*(entry.get("warnings") or []), entry.get("mde_warning")] if w]
        if view:
            warnings = [w for w in warnings if w not in view["warnings"] and not str(w).startswith(
                ("deterministic:", "censored:", "only the upper end", "only the lower end", "no side of the interval")
            )]
            warnings = [*view["warnings"], *warnings]
        if reason and reason not in warnings:
            warnings.insert(0, reason)
        rows.append(
            {
                "claim": claim,
                "expectation": claim_expectation(base, scale),
                "threshold_unit": unit,
                "verdict": verdict,
                "verdict_label": label,
                "verdict_css": css,
                "evidence": entry.get("evidence") or "",
                "experiment": entry.get("experiment"),
                "experiments": [
                    {
                        "experiment": e.get("experiment"),
                        "verdict": e.get("verdict"),
                        "reason": e.get("reason"),
                        "n_seeds": e.get("n_seeds"),
                    }
                    for e in per_experiment
                ] if len(per_experiment) > 1 else [],
                "experiments_disagree": bool(entry.get("experiments_disagree")),
                "effect": view,
                "p_holm": entry.get("p_holm"),
                "confidence": confidence,
                "warnings": list(dict.fromkeys(warnings)),
                "reproductions_disagree": bool(entry.get("reproductions_disagree")),
            }
        )
    return rows


def metric_row(metric: dict[str, Any], confidence: str) -> dict[str, Any]:
    effect = effect_view(metric.get("effect"), label=f"{metric.get('metric')}, {confidence}")
    return {
        "plugin": metric.get("plugin"),
        "metric": metric.get("metric"),
        "version": metric.get("metric_version"),
        "axis": metric.get("axis") or "diagnostic",
        "unit": metric.get("unit") or "",
        "scale": metric.get("scale") or "",
        "scale_label": SCALE_LABELS.get(metric.get("scale") or "", ""),
        "time_to_event": bool(metric.get("time_to_event")),
        "higher_is_better": metric.get("higher_is_better"),
        "evidence": metric.get("evidence") or "",
        "n_runs": metric.get("n_runs"),
        "n_seeds": metric.get("n_seeds", (metric.get("effect") or {}).get("n")),
        "effect": effect,
    }


def metric_rows(effects: dict[str, Any], metrics: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    confidence = confidence_label(effects.get("confidence"))
    rows = [metric_row(m, confidence) for m in (effects.get("metrics") or [] if metrics is None else metrics)]
    order = {"safety": 0, "capability": 1, "diagnostic": 2}
    return sorted(rows, key=lambda r: (order.get(r["axis"], 3), r["plugin"] or "", r["metric"] or ""))


def axis_view(axis: str, score: dict[str, Any] | None) -> dict[str, Any]:
    """An axis score in log units with its factor ("×2.0 better") and interval."""
    if not score or _finite(score.get("score")) is None:
        return {"axis": axis, "score": None}
    estimate, low, high = _finite(score.get("score")), _finite(score.get("ci_low")), _finite(score.get("ci_high"))
    components = score.get("components") if isinstance(score.get("components"), dict) else {}
    return {
        "axis": axis,
        "score": estimate,
        "text": charts.fmt_log(estimate),
        "factor": charts.factor_text(estimate),
        "low": low,
        "high": high,
        "interval_text": (
            f"{charts.fmt_log(low)} to {charts.fmt_log(high)}" if low is not None and high is not None else None
        ),
        "log_units": score.get("unit") == "log" or score.get("factor") is not None,
        "significant": bool(score.get("significant")),
        "deterministic": bool(score.get("deterministic")),
        "n_metrics": score.get("n_metrics"),
        "n_seeds": score.get("n_seeds"),
        "experiment": score.get("experiment"),
        "method": score.get("method") or "",
        "components": [
            {"metric": name, "text": charts.fmt_log(v), "factor": charts.factor_text(v)}
            for name, v in sorted(components.items())
            if _finite(v) is not None
        ],
        "warnings": list(score.get("warnings") or []),
        "svg": charts.interval_svg(estimate, low, high, label=f"{axis} score (log units)", formatter=charts.fmt_log),
    }


def axis_rows(effects: dict[str, Any]) -> list[dict[str, Any]]:
    scores = effects.get("axis_scores") or {}
    return [axis_view(axis, scores.get(axis)) for axis in ("safety", "capability")]


def params_summary(params: Any, limit: int = 160) -> str:
    """An experiment's parameters on one line: ``steps=2000, lr=0.001``."""
    if not isinstance(params, dict) or not params:
        return "default parameters"
    text = ", ".join(f"{key}={json.dumps(value)}" for key, value in sorted(params.items()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def experiment_blocks(finding: Finding, effects: dict[str, Any]) -> list[dict[str, Any]]:
    """The measured effects per experiment (never pooled): its id, plugin and parameters, its
    metrics and axis scores; retracted experiments are listed, marked, with the reason."""
    experiments = {e.pk: e for e in finding.experiments.all()}
    summaries = {s.get("experiment"): s for s in effects.get("experiments") or [] if isinstance(s, dict)}
    retracted = set(effects.get("retracted_experiments") or [])
    retracted |= {pk for pk, e in experiments.items() if e.retracted_at is not None}
    by_experiment: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for metric in effects.get("metrics") or []:
        by_experiment[metric.get("experiment")].append(metric)
    summary_experiment = effects.get("summary_experiment")
    ids = sorted(
        set(experiments) | {k for k in summaries if k is not None} | {k for k in by_experiment if k is not None}
    )
    blocks = []
    for pk in ids:
        experiment = experiments.get(pk)
        summary = summaries.get(pk) or {}
        scores = summary.get("axis_scores") or {}
        blocks.append(
            {
                "experiment": pk,
                "plugin": experiment.plugin if experiment else summary.get("plugin", ""),
                "params": params_summary(experiment.params if experiment else summary.get("params")),
                "retracted": pk in retracted,
                "retracted_at": experiment.retracted_at if experiment else None,
                "retraction_reason": experiment.retraction_reason if experiment else "",
                "n_runs": summary.get("n_runs"),
                "n_seeds": summary.get("n_seeds"),
                "summary": pk == summary_experiment and pk is not None,
                "metrics": metric_rows(effects, by_experiment.get(pk, [])),
                "axes": [axis_view(axis, scores.get(axis)) for axis in ("safety", "capability")]
                if any(scores.values()) else [],
            }
        )
    if by_experiment.get(None):  # an older cache: metrics not split by experiment
        blocks.append(
            {
                "experiment": None, "plugin": "", "params": "", "retracted": False, "retracted_at": None,
                "retraction_reason": "", "n_runs": None, "n_seeds": None, "summary": False,
                "metrics": metric_rows(effects, by_experiment[None]), "axes": [],
            }
        )
    return blocks


def recompute_notice(effects: dict[str, Any]) -> dict[str, Any]:
    """Whether the shown effects may be out of date (a recompute is queued) or the last
    recompute failed, and when they were computed."""
    return {
        "pending": bool(effects.get("pending")),
        "error": effects.get("error") or "",
        "computed_at": effects.get("computed_at"),
    }


def lineage(*, finding: Finding, user: Any) -> dict[str, Any]:
    """Direct and further (transitive) links, only to findings the user may read."""
    visible = finding_list(user=user)
    ancestors, direct_up = lineage_walk(finding, visible, up=True)
    descendants, direct_down = lineage_walk(finding, visible, up=False)
    linked = visible.filter(pk__in=ancestors | descendants).prefetch_related(None).order_by("id")
    related = {f.pk: f for f in linked} if ancestors or descendants else {}
    direct_up &= set(related)
    direct_down &= set(related)
    return {
        "builds_on": [related[pk] for pk in sorted(direct_up)],
        "built_upon_by": [related[pk] for pk in sorted(direct_down)],
        "further_ancestors": [related[pk] for pk in sorted(ancestors - direct_up) if pk in related],
        "further_descendants": [related[pk] for pk in sorted(descendants - direct_down) if pk in related],
    }


def downstream(*, finding: Finding, user: Any) -> dict[str, Any] | None:
    """A theory's roll-up of the effects measured on the findings built on it."""
    try:
        from registry.effects.selectors import rollup_get
    except ImportError:  # pragma: no cover - the effects layer predates the roll-up
        return None
    data = rollup_get(finding, user=user) or {}
    counts = data.get("counts") or {}
    if not counts.get("descendants"):
        return None
    return {
        "descendants": counts.get("descendants", 0),
        "lean": [
            {"value": lean, "label": LEAN_LABELS.get(lean, lean), "count": n}
            for lean, n in (counts.get("lean") or {}).items()
        ],
        "rows": data.get("descendants") or [],
    }


# ---------------------------------------------------------------- live evidence

#: Seconds between two polls of a finding's evidence while runs are queued or running or a
#: recompute is pending (the page stops polling once neither is true, as its runs section does).
#: A poll that finds nothing changed costs two queries and a 304.
EVIDENCE_POLL_S = 3


def _per_finding(queryset: QuerySet, **aggregate: Any) -> Subquery:
    """One aggregate over the rows of ``queryset`` that belong to the outer finding."""
    (name, expression), = aggregate.items()
    return Subquery(queryset.order_by().values("_f").annotate(**{name: expression}).values(name)[:1])


def evidence_state(finding: Finding) -> dict[str, Any]:
    """What a finding's evidence (claims, verdicts, effects, axis scores, status) depends on, read
    in one query: its effects row (when computed, the request sequence, pending, error), its
    current claims, its experiments (added, retracted), its runs (how many in each state, the
    newest, the last finished) and its own status. ``etag`` changes whenever one of them does, so
    a poll of the evidence fragment is answered 304 while nothing changed; ``active``: some run is
    queued or running; ``live``: active or a recompute pending (the page polls fast)."""
    runs = Run.objects.filter(reproduction__experiment__finding=OuterRef("pk")).annotate(
        _f=F("reproduction__experiment__finding")
    )
    claims = Claim.objects.filter(finding=OuterRef("pk"), is_current=True).annotate(_f=F("finding"))
    experiments = Experiment.objects.filter(finding=OuterRef("pk")).annotate(_f=F("finding"))
    row = (
        Finding.objects.filter(pk=finding.pk)
        .annotate(
            runs_n=_per_finding(runs, n=Count("pk")),
            runs_last=_per_finding(runs, n=Max("pk")),
            runs_queued=_per_finding(runs.filter(state=Run.State.QUEUED), n=Count("pk")),
            runs_running=_per_finding(runs.filter(state=Run.State.RUNNING), n=Count("pk")),
            runs_succeeded=_per_finding(runs.filter(state=Run.State.SUCCEEDED), n=Count("pk")),
            runs_finished_at=_per_finding(runs, n=Max("finished_at")),
            claims_n=_per_finding(claims, n=Count("pk")),
            claims_last=_per_finding(claims, n=Max("pk")),
            experiments_n=_per_finding(experiments, n=Count("pk")),
            experiments_retracted=_per_finding(experiments.filter(retracted_at__isnull=False), n=Count("pk")),
        )
        .values(
            "effects_cache__computed_at", "effects_cache__requested_seq", "effects_cache__pending",
            "effects_cache__error",
            "runs_n", "runs_last", "runs_queued", "runs_running", "runs_succeeded", "runs_finished_at",
            "claims_n", "claims_last", "experiments_n", "experiments_retracted",
            "status", "updated_at", "effects_stale",
        )
        .first()
    ) or {}
    # A recompute that committed between the caller's read of the finding and this one: the
    # fragment would show the new verdicts beside the old status and stop polling. Stay live.
    behind = bool(row) and any(row[name] != getattr(finding, name) for name in ("status", "updated_at",
                                                                                 "effects_stale"))
    # the finding's own fields as the caller's instance holds them (what the fragment renders), not
    # re-read: a status changed between the two reads must not be tagged as already shown
    row = {**row, "status": finding.status, "updated_at": finding.updated_at, "effects_stale": finding.effects_stale}
    key = json.dumps(row, sort_keys=True, default=str)
    active = bool(row.get("runs_queued") or row.get("runs_running"))
    pending = bool(row.get("effects_cache__pending"))
    return {
        "etag": '"ev-' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"',
        "active": active,
        "pending": pending,
        "live": active or pending or behind,
        "poll_s": EVIDENCE_POLL_S,
        "n_queued": row.get("runs_queued") or 0,
        "n_running": row.get("runs_running") or 0,
    }


def finding_evidence(*, finding: Finding, user: Any, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evidence part of a finding page (the fragment its poll swaps in): status and lean,
    recompute notices, claims with verdicts, measured effects per experiment, axis scores. Reads
    the effects cache only (reads never write)."""
    from registry.effects.selectors import finding_effects_get

    state = state or evidence_state(finding)
    effects = finding_effects_get(finding=finding, user=user) or {}
    return {
        "finding": finding,
        "evidence": state,
        "claims": claim_rows(finding, effects, awaiting=state["active"]),
        "metrics": metric_rows(effects),
        "experiment_blocks": experiment_blocks(finding, effects),
        "axes": axis_rows(effects),
        "summary_experiment": effects.get("summary_experiment"),
        "recompute": recompute_notice(effects),
        "min_seeds": effects.get("min_seeds") or DEFAULT_MIN_SEEDS,
        "status_help": status_help(finding.status),
        "lean": lean_badge(effects),
        "evidence_rungs": effects.get("evidence_rungs") or [],
        "n_runs": effects.get("n_runs") or 0,
    }


def finding_detail(*, finding: Finding, user: Any) -> dict[str, Any]:
    return {
        **finding_evidence(finding=finding, user=user),
        "summary_html": render_markdown(finding.summary),
        "tags": [t.name for t in finding.tags.all()],
        "authors": sorted(u.get_full_name() or u.get_username() for u in finding.authors.all()),
        "references": [reference_link(r) for r in finding.references or []],
        "xrisk": xrisk_items(finding.xrisk_sheet),
        "lineage": lineage(finding=finding, user=user),
        "downstream": downstream(finding=finding, user=user) if finding.kind == Finding.Kind.THEORY else None,
    }


# ---------------------------------------------------------------- runs (the live part)


def progress_percent(run: Run) -> int:
    if run.state == Run.State.SUCCEEDED:
        return 100
    return max(0, min(100, round((run.progress or 0.0) * 100)))


def run_row(run: Run, queue: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run for a table: its progress in percent and, while queued, its ``queue_estimate``."""
    return {
        "run": run,
        "percent": progress_percent(run),
        "active": run.state in ACTIVE_STATES,
        "terminal": run.state in TERMINAL_STATES,
        "queue": queue,
    }


def reproduction_badge(reproduction: Reproduction) -> str:
    """A reproduction's state for its badge: queued / running while a run is active; once every
    run ended, "cancelled" when they were all cancelled, "failed" when none succeeded, else
    "finished" (``reproduction_state`` says "finished" for all of these)."""
    outcome = reproduction_outcome(reproduction)
    if outcome is None:
        return reproduction_state(reproduction)
    return "finished" if outcome == "succeeded" else outcome


#: How a censored value reads: the stored value is the budget, a lower bound, never a time.
NOT_REACHED_NOTE = (
    "“> N (not reached)”: the event did not happen within the budget N; the value is a lower bound on "
    "the time to the event, not a time."
)


def measurement_cell(value: float | None, censored: bool) -> dict[str, Any]:
    """One table cell: a number, or for a censored time-to-event value "> budget (not reached)"."""
    if value is None:
        return {"value": None, "censored": False, "text": "n/a"}
    if censored:
        return {"value": value, "censored": True, "text": f"> {charts.fmt_number(value)} (not reached)"}
    return {"value": value, "censored": False, "text": charts.fmt_number(value)}


def measurement_table(runs: list[Run]) -> dict[str, Any]:
    """Per run and arm, the value of each metric (rows), metrics as columns. Each cell has its text;
    a censored value (event not reached within the budget) reads "> budget (not reached)"."""
    metrics = sorted({m.metric for run in runs for m in run.measurements.all()})
    rows = []
    n_censored = 0
    for run in runs:
        by_arm: dict[str, dict[str, tuple[float, bool]]] = defaultdict(dict)
        for m in run.measurements.all():
            by_arm[m.arm][m.metric] = (m.value, bool(m.censored))
            n_censored += bool(m.censored)
        for arm in sorted(by_arm, key=lambda a: (a != "baseline", a != "intervention", a)):
            cells = [measurement_cell(*by_arm[arm].get(metric, (None, False))) for metric in metrics]
            rows.append({"run": run, "arm": arm, "values": cells})
    return {
        "metrics": metrics,
        "rows": rows,
        "censored": n_censored,
        "censored_note": NOT_REACHED_NOTE if n_censored else "",
    }


def _arm_order(arm: str) -> tuple[bool, bool, str]:
    return (arm != "baseline", arm != "intervention", arm)


def metric_plots(runs: list[Run], units: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One dot plot per metric: every run's arms, baseline against intervention. A censored value
    (event not reached) is a bound, not a value: it is left out of the plot, and the plot's note
    says how many per arm were left out. A metric whose every value is censored has no plot."""
    values: dict[str, list[tuple[str, int, int, float]]] = defaultdict(list)
    censored: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    arms: dict[str, set[str]] = defaultdict(set)
    for run in runs:
        for m in run.measurements.all():
            arms[m.metric].add(m.arm)
            if m.censored:
                censored[m.metric][m.arm] += 1
            else:
                values[m.metric].append((m.arm, run.pk, run.seed, m.value))
    units = units or {}
    plots = []
    for metric in sorted(arms):
        left_out = censored.get(metric) or {}
        note = ""
        if left_out:
            per_arm = ", ".join(f"{left_out[arm]} {arm}" for arm in sorted(left_out, key=_arm_order))
            note = (
                f"Not reached within the budget: {per_arm} value(s), left out of the plot "
                "(a censored value is a lower bound, not a time)."
            )
        svg = None
        if values.get(metric):
            svg = charts.dot_plot_svg(
                values[metric], metric=metric, unit=units.get(metric, ""), arms=sorted(arms[metric], key=_arm_order)
            )
        plots.append({"metric": metric, "svg": svg, "censored": sum(left_out.values()), "note": note})
    return plots


def _metric_units(plugin: str) -> dict[str, str]:
    entry = all_plugins().get(plugin)
    if entry is None or entry.experiment is None:
        return {}
    return {m.name: m.unit for m in entry.experiment.metrics}


def artifact_rows(runs: list[Run]) -> list[dict[str, Any]]:
    return [
        {
            "artifact": artifact,
            "run": run,
            "url": reverse("api:artifact-download", args=[artifact.pk]),
            "is_image": artifact.content_type == "image/png",
            # the image's alt text and caption: what it is and where it comes from
            "label": f"{artifact.name} from run {run.pk} (seed {run.seed})",
        }
        for run in runs
        for artifact in run.artifacts.all()
    ]


#: Runs per page of a finding's runs section (and of each poll of it).
RUNS_PAGE_SIZE = 50


def finding_runs(*, finding: Finding, page: Any = None) -> dict[str, Any]:
    """One page of a (visible) finding's runs (RUNS_PAGE_SIZE, newest reproductions first within
    each experiment) grouped by experiment and reproduction, with the page's per-arm values, plots
    and artifacts; ``active`` says whether some run of the finding is still queued or running and
    ``page`` is the Django page (its number, ``has_next``...). Every experiment is listed, also
    those with no run on this page. Never loads more than a page of runs."""
    from django.core.paginator import Paginator
    from django.db.models import Prefetch

    from registry.reproductions.selectors import gpu_availability, reproduction_waiting_for_gpu

    gpu_available = gpu_availability()  # asked once for the page, and only if a GPU run waits
    all_runs = Run.objects.filter(reproduction__experiment__finding=finding)
    ordered = all_runs.order_by("reproduction__experiment_id", "-reproduction_id", "id")
    runs_page = Paginator(ordered.values_list("pk", flat=True), RUNS_PAGE_SIZE).get_page(page)
    page_ids = list(runs_page.object_list)
    page_runs = list(
        Run.objects.filter(pk__in=page_ids)
        .select_related("reproduction")
        .prefetch_related("measurements", "artifacts")
        .order_by("reproduction__experiment_id", "-reproduction_id", "id")
    )
    reproduction_ids = {run.reproduction_id for run in page_runs}
    reproductions = {
        r.pk: r
        for r in Reproduction.objects.filter(pk__in=reproduction_ids)
        .select_related("requested_by")
        .prefetch_related(Prefetch("runs", queryset=Run.objects.only("id", "state", "reproduction_id")))
    }
    experiments = list(
        Experiment.objects.filter(finding=finding).order_by("id").annotate(n_reproductions=Count("reproductions"))
    )
    estimates = queue_estimates(page_runs, {e.pk: e for e in experiments})
    by_experiment: dict[int, dict[int, list[Run]]] = defaultdict(dict)
    for run in page_runs:
        reproduction = reproductions[run.reproduction_id]
        by_experiment[reproduction.experiment_id].setdefault(reproduction.pk, []).append(run)
    blocks = []
    for experiment in experiments:
        runs_by_reproduction = by_experiment.get(experiment.pk, {})
        runs = [run for pk in sorted(runs_by_reproduction) for run in runs_by_reproduction[pk]]
        repro_rows = []
        for reproduction_pk, repro_runs in runs_by_reproduction.items():  # newest first (the page order)
            reproduction = reproductions[reproduction_pk]
            repro_rows.append(
                {
                    "reproduction": reproduction,
                    "state": reproduction_badge(reproduction),
                    "self_reported": reproduction.source == Reproduction.Source.SELF_REPORTED,
                    "waiting_for_gpu": reproduction_waiting_for_gpu(reproduction, gpu_available=gpu_available),
                    "runs": [run_row(run, estimates.get(run.pk)) for run in repro_runs],
                    "n_runs": len(reproduction.runs.all()),
                }
            )
        measured = [run for run in runs if run.measurements.all()]
        blocks.append(
            {
                "experiment": experiment,
                "n_reproductions": experiment.n_reproductions,
                "params_json": json.dumps(experiment.params, indent=2, sort_keys=True),
                "reproductions": repro_rows,
                "measurements": measurement_table(measured),
                "plots": metric_plots(measured, _metric_units(experiment.plugin)),
                "artifacts": artifact_rows(runs),
            }
        )
    return {
        "finding": finding,
        "experiments": blocks,
        "active": all_runs.filter(state__in=ACTIVE_STATES).exists(),
        "page": runs_page,
        "paginated": runs_page.paginator.num_pages > 1,
        "n_runs": runs_page.paginator.count,
    }


# ---------------------------------------------------------------- one run


#: How the environment a run captured is labelled (worker/sandbox.py ``capture_environment``).
ENVIRONMENT_LABELS = {
    "python": "Python", "platform": "Platform", "hostname": "Host", "torch": "PyTorch", "cuda": "CUDA",
    "cudnn": "cuDNN", "device": "Device", "device_name": "Device name", "torch_threads": "PyTorch threads",
    "seed": "Seed", "deterministic": "Deterministic", "plugin_version": "Plugin version", "gpu_count": "GPUs",
    "driver": "NVIDIA driver", "cublas_workspace_config": "cuBLAS workspace config",
    "memory_limit": "Memory limit",
}
#: What an absent (null) value means, where it means something particular.
ENVIRONMENT_NONE = {
    "cuda": "none (a CPU-only build of PyTorch)",
    "cudnn": "none (not available)",
    "driver": "none (no NVIDIA driver found)",
}


def environment_items(environment: Any) -> list[dict[str, str]]:
    """A run's captured environment as labelled values in words: a null is never shown raw
    ("CUDA: none (a CPU-only build of PyTorch)"), booleans read yes / no."""
    if not isinstance(environment, dict):
        return []
    items = []
    for key, value in sorted(environment.items()):
        if value is None or value == "":
            text = ENVIRONMENT_NONE.get(key, "not recorded")
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value)
        items.append(
            {"key": key, "label": ENVIRONMENT_LABELS.get(key, str(key).replace("_", " ").capitalize()),
             "value": text, "missing": value is None or value == ""}
        )
    return items


def run_breadcrumbs(run: Run) -> list[dict[str, str]]:
    """Finding › experiment › reproduction › run, each a link (the experiment and reproduction to
    their place on the finding page), the run itself last (the current page)."""
    finding = run.reproduction.experiment.finding
    experiment = run.reproduction.experiment
    page = reverse("dashboard:finding-detail", args=[finding.pk])
    return [
        {"text": finding.title, "href": page},
        {"text": f"Experiment #{experiment.pk} ({experiment.plugin})", "href": f"{page}#experiment-{experiment.pk}"},
        {"text": f"Reproduction #{run.reproduction_id}", "href": f"{page}#reproduction-{run.reproduction_id}"},
        {"text": f"Run #{run.pk}", "href": ""},
    ]


def run_detail(run: Run) -> dict[str, Any]:
    table = measurement_table([run])
    experiment = run.reproduction.experiment
    estimates = queue_estimates([run], {experiment.pk: experiment})
    return {
        "run": run,
        "row": run_row(run, estimates.get(run.pk)),
        "finding": experiment.finding,
        "experiment": experiment,
        "breadcrumbs": run_breadcrumbs(run),
        "environment": environment_items(run.environment),
        "measurements": table,
        "artifacts": artifact_rows([run]),
    }


# ---------------------------------------------------------------- the landscape


def _score_text(score: dict[str, Any] | None) -> dict[str, Any] | None:
    """A landscape score in log units with its factor and interval, as text."""
    if not score or _finite(score.get("score")) is None:
        return None
    value, low, high = _finite(score.get("score")), _finite(score.get("ci_low")), _finite(score.get("ci_high"))
    return {
        "text": charts.fmt_log(value),
        "factor": charts.factor_text(value),
        "interval": f"{charts.fmt_log(low)} to {charts.fmt_log(high)}" if low is not None and high is not None else "",
    }


def _both_scored(item: dict[str, Any]) -> bool:
    safety, capability = item.get("safety") or None, item.get("capability") or None
    return bool(
        safety and capability and _finite(safety.get("score")) is not None
        and _finite(capability.get("score")) is not None
    )


def progress_rows(progress: dict[str, Any], findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each finding's safety gain above the trend (its residual) with its interval. Reads the
    per-finding list, or maps the per-point list (by index into the findings with both scores,
    in landscape order) when only that is present."""
    entries = [e for e in progress.get("findings") or [] if isinstance(e, dict)]
    if not entries:
        both = [f for f in findings if _both_scored(f)]
        for point in progress.get("points") or []:
            index = point.get("index") if isinstance(point, dict) else None
            if isinstance(index, int) and 0 <= index < len(both):
                entries.append({"finding": both[index].get("finding"), "title": both[index].get("title", ""), **point})
    rows = []
    for entry in entries:
        residual = _finite(entry.get("residual"))
        low, high = _finite(entry.get("ci_low")), _finite(entry.get("ci_high"))
        if residual is None:
            continue
        if low is not None and low > 0:
            reading = "above the trend"
        elif high is not None and high < 0:
            reading = "below the trend"
        elif low is None or high is None:
            reading = "no interval"
        else:
            reading = "on the trend"
        rows.append(
            {
                "finding": entry.get("finding"),
                "title": entry.get("title", ""),
                "href": reverse("dashboard:finding-detail", args=[entry["finding"]]) if entry.get("finding") else "",
                "residual": charts.fmt_log(residual),
                "interval": f"{charts.fmt_log(low)} to {charts.fmt_log(high)}" if low is not None and high is not None
                else "",
                "reading": reading,
                "significant": reading in ("above the trend", "below the trend"),
            }
        )
    return rows


def trend_view(progress: dict[str, Any]) -> dict[str, Any] | None:
    """The fitted trend of safety on capability, in words, or None when withheld."""
    slope, intercept = _finite(progress.get("slope")), _finite(progress.get("intercept"))
    if slope is None or intercept is None:
        return None

    def interval(low: Any, high: Any) -> str:
        low, high = _finite(low), _finite(high)
        return f"{charts.fmt_log(low)} to {charts.fmt_log(high)}" if low is not None and high is not None else ""

    return {
        "slope": charts.fmt_log(slope),
        "slope_interval": interval(progress.get("slope_ci_low"), progress.get("slope_ci_high")),
        "intercept": charts.fmt_log(intercept),
        "intercept_interval": interval(progress.get("intercept_ci_low"), progress.get("intercept_ci_high")),
        "n": progress.get("n"),
        "line": (intercept, slope),
    }


def landscape(
    *, user: Any, tag: str = "", kind: str = "", plugin: str = "", data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The landscape page's data; ``data``: ``landscape_get``'s answer when the caller has it."""
    from registry.effects.selectors import landscape_get

    if data is None:
        data = landscape_get(user=user, tag=tag or None, kind=kind or None, plugin=plugin or None) or {}
    findings = [f for f in data.get("findings") or [] if isinstance(f, dict)]
    points, rows = [], []
    for item in findings:
        safety, capability = item.get("safety") or None, item.get("capability") or None
        href = reverse("dashboard:finding-detail", args=[item.get("finding")])
        plotted = _both_scored(item)
        if plotted:
            points.append(
                charts.ScatterPoint(
                    finding=item["finding"],
                    title=item.get("title", ""),
                    href=href,
                    x=capability["score"],
                    y=safety["score"],
                    x_low=capability.get("ci_low"),
                    x_high=capability.get("ci_high"),
                    y_low=safety.get("ci_low"),
                    y_high=safety.get("ci_high"),
                    lean=item.get("lean") or "neither",
                )
            )
        lean = item.get("lean") or "neither"
        rows.append(
            {
                **item,
                "href": href,
                "plotted": plotted,
                "lean_label": LEAN_LABELS.get(lean, lean),
                "lean": lean,
                "safety_text": _score_text(safety),
                "capability_text": _score_text(capability),
            }
        )
    aggregate = data.get("aggregate") or {}
    counts = aggregate.get("counts") or {}
    progress = aggregate.get("differential_progress") or {}
    trend = trend_view(progress)
    correlation = aggregate.get("safety_capability_correlation") or {}
    return {
        "points": points,
        "rows": rows,
        # the chart itself is drawn by registry.dashboard.landscape.landscape_page (with its band)
        "n_plotted": len(points),
        "aggregate": aggregate,
        "score_unit": aggregate.get("score_unit") or "log",
        "counts": [
            {"value": lean, "label": LEAN_LABELS.get(lean, lean), "count": counts.get(lean, 0)} for lean in LEAN_LABELS
        ],
        "correlation": correlation,
        "correlation_shown": _finite(correlation.get("r")) is not None,
        "trend": trend,
        "progress": progress,
        "progress_rows": progress_rows(progress, findings) if trend else [],
        "capabilities_correlation": data.get("capabilities_correlation") or [],
        "lineage": data.get("lineage") or [],
    }


# ---------------------------------------------------------------- plugins


def _schema_type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        target = defs.get(name) or {}
        return _schema_type(target, defs) if target and "$ref" not in target else name
    if "enum" in prop:
        return "one of " + ", ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return f"exactly {json.dumps(prop['const'])}"
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return " or ".join(_schema_type(option, defs) for option in prop[key])
    kind = prop.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        items = prop.get("items")
        return f"array of {_schema_type(items, defs)}" if isinstance(items, dict) and items else "array"
    return kind or "any"


CONSTRAINTS = (
    ("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"),
    ("minLength", "length ≥"), ("maxLength", "length ≤"), ("minItems", "items ≥"), ("maxItems", "items ≤"),
    ("pattern", "matches"),
)


def schema_fields(schema: dict[str, Any] | None) -> list[dict[str, str]]:
    """A JSON Schema object's properties as table rows: name, type, default, constraints, description."""
    if not isinstance(schema, dict):
        return []
    defs = schema.get("$defs") or schema.get("definitions") or {}
    required = set(schema.get("required") or [])
    fields = []
    for name, prop in (schema.get("properties") or {}).items():
        prop = prop if isinstance(prop, dict) else {}
        if "default" in prop:
            default = json.dumps(prop["default"])
        else:
            default = "required" if name in required else "—"
        fields.append(
            {
                "name": name,
                "title": prop.get("title", ""),
                "type": _schema_type(prop, defs),
                "default": default,
                "constraints": ", ".join(f"{symbol} {prop[key]}" for key, symbol in CONSTRAINTS if key in prop),
                "description": prop.get("description", ""),
            }
        )
    return fields


def plugin_catalogue() -> list[dict[str, Any]]:
    entries = []
    for name, entry in sorted(all_plugins().items()):
        experiment = entry.experiment
        item: dict[str, Any] = {
            "name": name,
            "available": entry.available,
            "error": entry.error,
            "source": entry.source,
        }
        if experiment is not None:
            try:
                schema = experiment.params_schema()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the catalogue
                schema, item["error"] = None, item["error"] or f"params schema failed: {exc!r}"
            item.update(
                version=experiment.version,
                api_version=experiment.api_version,
                description=(experiment.__doc__ or "").strip(),
                metrics=[
                    {
                        "name": m.name,
                        "axis": getattr(m.axis, "value", str(m.axis)),
                        "higher_is_better": m.higher_is_better,
                        "unit": m.unit,
                        "description": m.description,
                        "version": m.version,
                        "scale": str(getattr(m, "scale", "") or ""),
                        "time_to_event": bool(getattr(m, "time_to_event", False)),
                    }
                    for m in experiment.metrics
                ],
                arms=list(experiment.arms),
                device=experiment.resources.device,
                time_limit_s=experiment.resources.time_limit_s,
                presets=sorted(experiment.presets),
                params=schema_fields(schema),
            )
        entries.append(item)
    return entries


# ---------------------------------------------------------------- queues and workers

#: How many of the latest succeeded runs (of an experiment, else of its plugin) a queued run's
#: expected duration is the median of.
DURATION_SAMPLE = 50
#: At most this many workers are listed on the workers page (the most recently seen first).
WORKERS_PAGE_MAX = 200


def _live_since(now: datetime | None = None) -> datetime:
    """A worker whose last presence record is newer than this is live (it records one a minute)."""
    from django.conf import settings
    from django.utils import timezone

    return (now or timezone.now()) - timedelta(seconds=settings.GPU_WORKER_SEEN_WINDOW_S)


def live_workers() -> list[WorkerPresence]:
    """The workers seen within GPU_WORKER_SEEN_WINDOW_S (one query)."""
    return list(WorkerPresence.objects.filter(last_seen__gte=_live_since()).order_by("hostname"))


def workers_per_queue(workers: list[WorkerPresence]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for worker in workers:
        for queue in worker.queues if isinstance(worker.queues, list) else []:
            counts[str(queue)] += 1
    return dict(counts)


def _median_seconds(rows: list[tuple[Any, datetime, datetime]]) -> dict[Any, tuple[float, int]]:
    """(median duration in seconds, sample size) per key of (key, started_at, finished_at) rows."""
    durations: dict[Any, list[float]] = defaultdict(list)
    for key, started, finished in rows:
        seconds = (finished - started).total_seconds()
        if seconds >= 0:
            durations[key].append(seconds)
    return {key: (statistics.median(values), len(values)) for key, values in durations.items() if values}


def run_durations(*, experiments: set[int], plugins: set[str]) -> dict[str, dict[Any, tuple[float, int]]]:
    """Median wall time of the latest DURATION_SAMPLE succeeded registry runs (started to
    finished) per experiment and per plugin: two queries, whatever the number of runs (a window
    keeps the latest per group in the database). Self-reported runs are left out (their times
    are not a worker's). A plugin's sample is of public findings' runs only: the run times of a
    restricted or embargoed finding are never shown on another finding's page (an experiment's
    own runs are those of the finding being shown)."""
    succeeded = Run.objects.filter(
        state=Run.State.SUCCEEDED, started_at__isnull=False, finished_at__isnull=False,
        reproduction__source=Reproduction.Source.REGISTRY,
    )
    public = succeeded.filter(reproduction__experiment__finding__in=finding_list(user=None))
    result: dict[str, dict[Any, tuple[float, int]]] = {"experiment": {}, "plugin": {}}
    for group, field, keys, runs in (
        ("experiment", "reproduction__experiment_id", experiments, succeeded),
        ("plugin", "reproduction__experiment__plugin", plugins, public),
    ):
        if not keys:
            continue
        rows = (
            runs.filter(**{f"{field}__in": sorted(keys)})
            .annotate(_rank=Window(RowNumber(), partition_by=[F(field)], order_by=F("finished_at").desc()))
            .filter(_rank__lte=DURATION_SAMPLE)
            .values_list(field, "started_at", "finished_at")
        )
        result[group] = _median_seconds(list(rows))
    return result


def queue_positions(run_ids: list[int]) -> dict[int, tuple[int, int]]:
    """(position, length) of each queued run in its queue: 1 + the queued runs of the same queue
    requested before it (the broker serves a queue oldest first; a run a dead worker left is
    re-sent to the front, and it is older anyway), and how many runs that queue holds. One query."""
    from django.db.models.functions import Coalesce

    if not run_ids:
        return {}
    queued = Run.objects.filter(state=Run.State.QUEUED, queue=OuterRef("queue")).order_by().values("queue")
    rows = (
        Run.objects.filter(pk__in=run_ids, state=Run.State.QUEUED)
        .annotate(
            ahead=Coalesce(Subquery(queued.filter(pk__lt=OuterRef("pk")).annotate(n=Count("pk")).values("n")[:1]), 0),
            length=Coalesce(Subquery(queued.annotate(n=Count("pk")).values("n")[:1]), 0),
        )
        .values_list("pk", "ahead", "length")
    )
    return {pk: (ahead + 1, length) for pk, ahead, length in rows}


def duration_text(seconds: float) -> str:
    """A duration in words: "about 40 s", "about 12 min", "about 2 h 5 min"."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"about {minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"about {hours} h" + (f" {rest} min" if rest else "")


def no_worker_text(queue: str) -> str:
    if queue == "gpu":
        return "No GPU worker is live: this GPU run waits in the queue until one connects."
    return f"No live worker takes runs from the {queue} queue: this run waits until one connects."


def queue_estimate(
    *, queue: str, position: int, length: int, workers: int, median: tuple[float, int] | None, basis: str
) -> dict[str, Any]:
    """A queued run's place in its queue and when it should be done: position × the median run
    time (of its experiment, else its plugin) ÷ the live workers on the queue. No ETA without a
    live worker (said in words) or without a succeeded run to time."""
    estimate: dict[str, Any] = {
        "queue": queue, "position": position, "length": length, "workers": workers,
        "no_worker": workers == 0, "eta_s": None, "eta_text": "", "basis": "",
        "position_text": f"position {position} of {length} in the {queue} queue",
    }
    if workers == 0:
        estimate["eta_text"] = no_worker_text(queue)
    elif median is None:
        estimate["eta_text"] = "no ETA yet: no run of this plugin has succeeded to time it"
    else:
        seconds, n = median
        eta = position * seconds / workers
        estimate["eta_s"] = eta
        estimate["eta_text"] = f"done in {duration_text(eta)}"
        estimate["basis"] = (
            f"median run time {duration_text(seconds).removeprefix('about ')} over the last {n} succeeded "
            f"run{'s' if n != 1 else ''} of {basis}; {workers} live worker{'s' if workers != 1 else ''} "
            f"on the {queue} queue"
        )
    return estimate


def queue_estimates(runs: list[Run], experiments: dict[int, Experiment], workers: list[WorkerPresence] | None = None
                    ) -> dict[int, dict[str, Any]]:
    """``queue_estimate`` of each queued run of ``runs`` (their experiments by id): four queries
    when one is queued (positions, live workers, durations by experiment and by plugin), none
    otherwise."""
    queued = [run for run in runs if run.state == Run.State.QUEUED]
    if not queued:
        return {}
    positions = queue_positions([run.pk for run in queued])
    workers = live_workers() if workers is None else workers
    per_queue = workers_per_queue(workers)
    experiment_of = {run.pk: experiments.get(run.reproduction.experiment_id) for run in queued}
    durations = run_durations(
        experiments={e.pk for e in experiment_of.values() if e is not None},
        plugins={e.plugin for e in experiment_of.values() if e is not None},
    )
    estimates = {}
    for run in queued:
        if run.pk not in positions:  # claimed meanwhile
            continue
        experiment = experiment_of[run.pk]
        median, basis = None, ""
        if experiment is not None:
            median = durations["experiment"].get(experiment.pk)
            basis = "this experiment"
            if median is None:
                median, basis = durations["plugin"].get(experiment.plugin), f"the {experiment.plugin} plugin"
        position, length = positions[run.pk]
        estimates[run.pk] = queue_estimate(
            queue=run.queue, position=position, length=length, workers=per_queue.get(run.queue, 0),
            median=median, basis=basis,
        )
    return estimates


def _host(name: str) -> str:
    """The machine of a worker name: "celery@gpu-1" and a run's "gpu-1:4242" -> "gpu-1"."""
    return str(name).rsplit("@", 1)[-1].split(":", 1)[0]


def workers_overview() -> dict[str, Any]:
    """The workers page: every worker that recorded its presence (queues, hardware, last seen,
    live or not, runs running on its machine) and every queue (live workers, queued and running
    runs), with a plain-words warning where a queue has runs and no live worker. Three queries."""
    from django.utils import timezone

    now = timezone.now()
    since = _live_since(now)
    workers = list(WorkerPresence.objects.order_by("-last_seen", "hostname")[:WORKERS_PAGE_MAX])
    running_by_host: dict[str, int] = defaultdict(int)
    for host, n in (
        Run.objects.filter(state=Run.State.RUNNING).order_by().values("worker_host").annotate(n=Count("pk"))
        .values_list("worker_host", "n")
    ):
        running_by_host[_host(host)] += n
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"queued": 0, "running": 0})
    for queue, state, n in (
        Run.objects.filter(state__in=ACTIVE_STATES).order_by().values("queue", "state").annotate(n=Count("pk"))
        .values_list("queue", "state", "n")
    ):
        counts[queue][state] += n
    rows = []
    live_by_queue: dict[str, list[str]] = defaultdict(list)
    for worker in workers:
        live = worker.last_seen >= since
        queues = [str(q) for q in worker.queues] if isinstance(worker.queues, list) else []
        if live:
            for queue in queues:
                live_by_queue[queue].append(worker.hostname)
        rows.append(
            {
                "worker": worker,
                "hostname": worker.hostname,
                "queues": queues,
                "hardware": worker.hardware or "not reported",
                "last_seen": worker.last_seen,
                "seen_ago": duration_text((now - worker.last_seen).total_seconds()).removeprefix("about ") + " ago",
                "live": live,
                "running": running_by_host.get(_host(worker.hostname), 0),
            }
        )
    queue_rows = []
    for queue in sorted({"cpu", "gpu"} | set(counts) | set(live_by_queue)):
        live = live_by_queue.get(queue, [])
        queued, running = counts[queue]["queued"], counts[queue]["running"]
        warning = ""
        if not live:
            warning = (
                "No GPU worker is live: runs requested on a GPU wait in the queue until one connects."
                if queue == "gpu" else f"No live worker takes runs from the {queue} queue."
            )
        queue_rows.append(
            {"queue": queue, "workers": live, "n_workers": len(live), "queued": queued, "running": running,
             "warning": warning}
        )
    return {
        "workers": rows,
        "queues": queue_rows,
        "n_live": sum(1 for row in rows if row["live"]),
        "live_window_s": int((now - since).total_seconds()),
        "truncated": len(workers) == WORKERS_PAGE_MAX,
    }
