"""Data shaping for the dashboard's templates: plain dicts and lists, no HTTP.

Visibility always starts from ``registry.findings.selectors.finding_list(user=...)``. The
effects come from ``registry.effects.selectors``; their dicts are read with ``.get`` so a
finding without measured effects (or an older cache entry) renders as "no data yet".
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

from django.db.models import Q, QuerySet
from django.http import Http404
from django.urls import reverse

from plugins.registry import all_plugins
from registry.dashboard import charts
from registry.effects.models import FindingEffects
from registry.findings.markdown import render_markdown
from registry.findings.models import Claim, Finding, Tag
from registry.findings.selectors import finding_lineage, finding_list
from registry.reproductions.models import TERMINAL_STATES, Experiment, Reproduction, Run
from registry.reproductions.selectors import reproduction_state, run_list

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
    tags = Tag.objects.filter(findings__in=finding_list(user=user))
    return list(tags.values_list("name", flat=True).distinct().order_by("name"))


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
    findings = finding_list(user=user)
    if q:
        findings = findings.filter(Q(title__icontains=q) | Q(summary__icontains=q))
    if kind:
        findings = findings.filter(kind=kind)
    if status:
        findings = findings.filter(status=status)
    if tag:
        findings = findings.filter(tags__name=tag.strip().lower())
    if plugin:
        findings = findings.filter(experiments__plugin=plugin)
    return findings.distinct().prefetch_related("experiments").order_by("-created_at", "-id")


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


def claim_expectation(claim: dict[str, Any]) -> str:
    direction = claim.get("direction")
    if direction == Claim.Direction.NON_INFERIOR:
        margin = claim.get("margin") or 0.0
        return f"not worse by more than {margin * 100:g}%"
    effect = claim.get("min_relative_effect") or 0.0
    if direction == Claim.Direction.DECREASE:
        return f"decreases by at least {effect * 100:g}%"
    if direction == Claim.Direction.INCREASE:
        return f"increases by at least {effect * 100:g}%"
    return str(direction or "")


def claim_reference(claim: dict[str, Any], higher_is_better: bool | None) -> float | None:
    """The claimed relative change as a point on the effect axis (a dashed mark on the plot)."""
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


def effect_view(
    effect: dict[str, Any] | None, *, label: str, reference: float | None = None
) -> dict[str, Any] | None:
    """An effect estimate for a table row: relative change (or, when the baseline mean is 0, the
    absolute difference) with its interval as an inline SVG plot."""
    if not effect:
        return None
    relative = effect.get("relative_change")
    if relative is not None:
        estimate, low, high = relative, effect.get("relative_ci_low"), effect.get("relative_ci_high")
        formatter, scale = charts.fmt_percent, "relative"
    else:
        estimate, low, high = effect.get("mean_difference"), effect.get("ci_low"), effect.get("ci_high")
        formatter, scale = charts.fmt_number, "absolute"
        reference = None
    return {
        "scale": scale,
        "estimate": estimate,
        "low": low,
        "high": high,
        "text": formatter(estimate) if estimate is not None else "n/a",
        "interval_text": f"{formatter(low)} to {formatter(high)}" if low is not None and high is not None else None,
        "n": effect.get("n"),
        "p_value": effect.get("p_value"),
        "warnings": list(effect.get("warnings") or []),
        "svg": charts.interval_svg(estimate, low, high, reference=reference, label=label, formatter=formatter),
    }


def _metric_index(effects: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    return {(m.get("plugin"), m.get("metric"), m.get("metric_version")): m for m in effects.get("metrics") or []}


def claim_rows(finding: Finding, effects: dict[str, Any]) -> list[dict[str, Any]]:
    """Current claims next to what the reproductions measured."""
    entries = {c.get("claim"): c for c in effects.get("claims") or []}
    metrics = _metric_index(effects)
    confidence = confidence_label(effects.get("claims_confidence", effects.get("confidence")))
    rows = []
    for claim in finding.claims.filter(is_current=True).select_related("verdict").order_by("id"):
        entry = entries.get(claim.pk) or {}
        base = {
            "direction": claim.direction,
            "min_relative_effect": claim.min_relative_effect,
            "margin": claim.margin,
        }
        metric = metrics.get((entry.get("plugin"), claim.metric, entry.get("metric_version"))) or {}
        reference = claim_reference(base, metric.get("higher_is_better"))
        stored = getattr(claim, "verdict", None)
        rows.append(
            {
                "claim": claim,
                "expectation": claim_expectation(base),
                "verdict": entry.get("verdict") or (stored.verdict if stored else "inconclusive"),
                "evidence": entry.get("evidence") or "",
                "effect": effect_view(
                    entry.get("effect"), label=f"{claim.metric}, {confidence}", reference=reference
                ),
                "p_holm": entry.get("p_holm"),
                "confidence": confidence,
                "warnings": [w for w in [*(entry.get("warnings") or []), entry.get("mde_warning")] if w],
                "reproductions_disagree": bool(entry.get("reproductions_disagree")),
            }
        )
    return rows


def metric_rows(effects: dict[str, Any]) -> list[dict[str, Any]]:
    confidence = confidence_label(effects.get("confidence"))
    rows = []
    for metric in effects.get("metrics") or []:
        rows.append(
            {
                "plugin": metric.get("plugin"),
                "metric": metric.get("metric"),
                "version": metric.get("metric_version"),
                "axis": metric.get("axis") or "diagnostic",
                "unit": metric.get("unit") or "",
                "higher_is_better": metric.get("higher_is_better"),
                "evidence": metric.get("evidence") or "",
                "n_runs": metric.get("n_runs"),
                "effect": effect_view(metric.get("effect"), label=f"{metric.get('metric')}, {confidence}"),
            }
        )
    order = {"safety": 0, "capability": 1, "diagnostic": 2}
    return sorted(rows, key=lambda r: (order.get(r["axis"], 3), r["plugin"] or "", r["metric"] or ""))


def axis_rows(effects: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for axis in ("safety", "capability"):
        score = (effects.get("axis_scores") or {}).get(axis)
        if not score:
            rows.append({"axis": axis, "score": None})
            continue
        estimate, low, high = score.get("score"), score.get("ci_low"), score.get("ci_high")
        rows.append(
            {
                "axis": axis,
                "score": estimate,
                "low": low,
                "high": high,
                "significant": bool(score.get("significant")),
                "n_metrics": score.get("n_metrics"),
                "warnings": list(score.get("warnings") or []),
                "svg": charts.interval_svg(
                    estimate, low, high, label=f"{axis} score", formatter=charts.fmt_number
                ),
            }
        )
    return rows


def lineage(*, finding: Finding, user: Any) -> dict[str, Any]:
    """Direct and further (transitive) links, only to findings the user may read."""
    ids = finding_lineage(finding=finding, user=user)
    ancestors, descendants = set(ids.get("ancestors", [])), set(ids.get("descendants", []))
    related = {f.pk: f for f in finding_list(user=user).filter(pk__in=ancestors | descendants).order_by("id")}
    direct_up = {f.pk for f in finding.builds_on.all()} & set(related)
    direct_down = {f.pk for f in finding.built_upon_by.all()} & set(related)
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


def finding_detail(*, finding: Finding, user: Any) -> dict[str, Any]:
    from registry.effects.selectors import finding_effects_get

    effects = finding_effects_get(finding=finding, user=user) or {}
    finding.refresh_from_db(fields=["status"])  # computing effects may have updated it
    return {
        "finding": finding,
        "summary_html": render_markdown(finding.summary),
        "tags": [t.name for t in finding.tags.all()],
        "authors": sorted(u.get_full_name() or u.get_username() for u in finding.authors.all()),
        "references": [reference_link(r) for r in finding.references or []],
        "xrisk": xrisk_items(finding.xrisk_sheet),
        "claims": claim_rows(finding, effects),
        "metrics": metric_rows(effects),
        "axes": axis_rows(effects),
        "lean": lean_badge(effects),
        "evidence_rungs": effects.get("evidence_rungs") or [],
        "n_runs": effects.get("n_runs") or 0,
        "lineage": lineage(finding=finding, user=user),
        "downstream": downstream(finding=finding, user=user) if finding.kind == Finding.Kind.THEORY else None,
    }


# ---------------------------------------------------------------- runs (the live part)


def progress_percent(run: Run) -> int:
    if run.state == Run.State.SUCCEEDED:
        return 100
    return max(0, min(100, round((run.progress or 0.0) * 100)))


def run_row(run: Run) -> dict[str, Any]:
    return {
        "run": run,
        "percent": progress_percent(run),
        "active": run.state in ACTIVE_STATES,
        "terminal": run.state in TERMINAL_STATES,
    }


def measurement_table(runs: list[Run]) -> dict[str, Any]:
    """Per run and arm, the value of each metric (rows), metrics as columns."""
    metrics = sorted({m.metric for run in runs for m in run.measurements.all()})
    rows = []
    for run in runs:
        by_arm: dict[str, dict[str, float]] = defaultdict(dict)
        for m in run.measurements.all():
            by_arm[m.arm][m.metric] = m.value
        for arm in sorted(by_arm, key=lambda a: (a != "baseline", a != "intervention", a)):
            rows.append({"run": run, "arm": arm, "values": [by_arm[arm].get(metric) for metric in metrics]})
    return {"metrics": metrics, "rows": rows}


def metric_plots(runs: list[Run], units: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One dot plot per metric: every run's arms, baseline against intervention."""
    values: dict[str, list[tuple[str, int, int, float]]] = defaultdict(list)
    for run in runs:
        for m in run.measurements.all():
            values[m.metric].append((m.arm, run.pk, run.seed, m.value))
    units = units or {}
    return [
        {"metric": metric, "svg": charts.dot_plot_svg(items, metric=metric, unit=units.get(metric, ""))}
        for metric, items in sorted(values.items())
    ]


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
        }
        for run in runs
        for artifact in run.artifacts.all()
    ]


def finding_runs(*, finding: Finding) -> dict[str, Any]:
    """Experiments of a (visible) finding with their reproductions, runs, per-arm values and
    artifacts; ``active`` says whether some run is still queued or running."""
    from registry.reproductions.services import reproduction_waiting_for_gpu

    experiments = (
        Experiment.objects.filter(finding=finding)
        .order_by("id")
        .prefetch_related("reproductions__requested_by", "reproductions__runs__measurements",
                          "reproductions__runs__artifacts")
    )
    blocks = []
    active = False
    for experiment in experiments:
        reproductions = sorted(experiment.reproductions.all(), key=lambda r: -r.pk)
        runs = [run for r in sorted(reproductions, key=lambda r: r.pk) for run in r.runs.all()]
        repro_rows = []
        for reproduction in reproductions:
            rows = [run_row(run) for run in reproduction.runs.all()]
            active = active or any(row["active"] for row in rows)
            repro_rows.append(
                {
                    "reproduction": reproduction,
                    "state": reproduction_state(reproduction),
                    "self_reported": reproduction.source == Reproduction.Source.SELF_REPORTED,
                    "waiting_for_gpu": reproduction_waiting_for_gpu(reproduction),
                    "runs": rows,
                }
            )
        measured = [run for run in runs if run.measurements.all()]
        blocks.append(
            {
                "experiment": experiment,
                "params_json": json.dumps(experiment.params, indent=2, sort_keys=True),
                "reproductions": repro_rows,
                "measurements": measurement_table(measured),
                "plots": metric_plots(measured, _metric_units(experiment.plugin)),
                "artifacts": artifact_rows(runs),
            }
        )
    return {"finding": finding, "experiments": blocks, "active": active}


# ---------------------------------------------------------------- one run


def run_detail(run: Run) -> dict[str, Any]:
    table = measurement_table([run])
    environment = run.environment if isinstance(run.environment, dict) else {}
    return {
        "run": run,
        "row": run_row(run),
        "finding": run.reproduction.experiment.finding,
        "experiment": run.reproduction.experiment,
        "environment": [
            {"key": key, "value": value if isinstance(value, str) else json.dumps(value)}
            for key, value in sorted(environment.items())
        ],
        "measurements": table,
        "artifacts": artifact_rows([run]),
    }


# ---------------------------------------------------------------- the landscape


def landscape(*, user: Any, tag: str = "", kind: str = "", plugin: str = "") -> dict[str, Any]:
    from registry.effects.selectors import landscape_get

    data = landscape_get(user=user, tag=tag or None, kind=kind or None, plugin=plugin or None) or {}
    points, rows = [], []
    for item in data.get("findings") or []:
        safety, capability = item.get("safety") or None, item.get("capability") or None
        href = reverse("dashboard:finding-detail", args=[item.get("finding")])
        plotted = bool(safety and capability and safety.get("score") is not None
                       and capability.get("score") is not None)
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
            }
        )
    aggregate = data.get("aggregate") or {}
    counts = aggregate.get("counts") or {}
    return {
        "points": points,
        "rows": rows,
        "scatter": charts.scatter_svg(points),
        "n_plotted": len(points),
        "aggregate": aggregate,
        "counts": [
            {"value": lean, "label": LEAN_LABELS.get(lean, lean), "count": counts.get(lean, 0)} for lean in LEAN_LABELS
        ],
        "correlation": aggregate.get("safety_capability_correlation") or {},
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
                    }
                    for m in experiment.metrics
                ],
                arms=list(experiment.arms),
                device=experiment.resources.device,
                time_limit_s=experiment.resources.time_limit_s,
                interval=experiment.interval,
                presets=sorted(experiment.presets),
                params=schema_fields(schema),
            )
        entries.append(item)
    return entries
