"""Comparing a finding's runs or reproductions side by side, with a config diff against the
finding's original run; and the rows of the CSV and JSON exports of a finding, a run and the
landscape. Plain data, no HTTP. Every function takes a finding or run the caller may already
see (the views resolve them through the visibility selectors) and runs a fixed number of queries
whatever the number of runs."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Exists, OuterRef, Prefetch, QuerySet
from django.urls import reverse

from registry.dashboard import charts
from registry.effects.models import FindingEffects
from registry.findings.models import Finding
from registry.findings.selectors import finding_list
from registry.reproductions.models import Experiment, Measurement, Reproduction, Run

#: At most this many runs or reproductions side by side (the page stays readable).
MAX_COMPARED = 12
#: The selection form lists at most this many reproductions (with their runs).
CHOICES_LIMIT = 50


@dataclass
class Selection:
    """Which runs and reproductions to compare, and the errors per query field."""

    runs: list[int] = field(default_factory=list)
    reproductions: list[int] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def add_error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)


def _ids(values: Sequence[str], name: str, selection: Selection) -> list[int]:
    ids: list[int] = []
    for raw in values:
        text = str(raw).strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 12 or int(text) < 1:
            selection.add_error(name, f"{text[:20]!r} is not a {name} number")
            continue
        if int(text) not in ids:
            ids.append(int(text))
    return ids


def parse_selection(query: Any) -> Selection:
    """``?run=1&run=2`` and/or ``?reproduction=3``: whole numbers, at most ``MAX_COMPARED`` in all."""
    selection = Selection()
    selection.runs = _ids(query.getlist("run"), "run", selection)
    selection.reproductions = _ids(query.getlist("reproduction"), "reproduction", selection)
    if len(selection.runs) + len(selection.reproductions) > MAX_COMPARED:
        name = "run" if selection.runs else "reproduction"
        selection.add_error(name, f"select at most {MAX_COMPARED} runs and reproductions in all")
    return selection


# ---------------------------------------------------------------- what is compared


def _runs_prefetch() -> Prefetch:
    return Prefetch(
        "runs",
        queryset=Run.objects.order_by("id")
        .only("id", "seed", "state", "hardware", "plugin_version", "environment", "reproduction_id")
        .prefetch_related(Prefetch("measurements", queryset=Measurement.objects.order_by("id"))),
    )


def _reproductions(finding: Finding) -> QuerySet[Reproduction]:
    return (
        Reproduction.objects.filter(experiment__finding=finding)
        .select_related("experiment", "requested_by")
        .order_by("id")
    )


def original_reproduction(finding: Finding) -> Reproduction | None:
    """The finding's original evidence: its earliest self-reported reproduction (the authors'
    own runs), else its earliest reproduction. One query (its runs prefetched: two)."""
    reproductions = _reproductions(finding).prefetch_related(_runs_prefetch())
    self_reported = reproductions.filter(source=Reproduction.Source.SELF_REPORTED).first()
    return self_reported or reproductions.first()


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            _flatten(f"{prefix}.{key}" if prefix else str(key), value[key], out)
    else:
        out[prefix] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _joined(values: Iterable[str]) -> str:
    distinct = sorted({v for v in values if v not in (None, "")})
    if not distinct:
        return "—"
    return distinct[0] if len(distinct) == 1 else "varies: " + ", ".join(distinct)


def config_of(experiment: Experiment, reproduction: Reproduction | None, runs: Sequence[Run]) -> dict[str, str]:
    """What a run (or the runs of a reproduction) ran with: plugin and version, the experiment's
    parameters, the device, hardware and environment, as flat ``name: text`` pairs."""
    config = {
        "plugin": experiment.plugin,
        "plugin version": _joined(run.plugin_version for run in runs),
        "experiment": f"#{experiment.pk}",
        "device": reproduction.device if reproduction else experiment.device,
        "hardware": _joined(run.hardware for run in runs),
    }
    params: dict[str, str] = {}
    _flatten("", experiment.params or {}, params)
    config.update({f"parameter {key}": value for key, value in params.items()} or {"parameters": "defaults"})
    environments: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        flat: dict[str, str] = {}
        _flatten("", run.environment if isinstance(run.environment, dict) else {}, flat)
        for key, value in flat.items():
            if key != "seed":  # each run's seed differs by design: not a config difference
                environments[key].append(value)
    for key in sorted(environments):
        config[f"environment {key}"] = _joined(environments[key])
    return config


def config_diff(original: dict[str, str], others: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """One row per config key (the original's order first): the original's value and each
    other's, each cell flagged ``changed`` where it differs from the original."""
    keys = list(original)
    for other in others:
        keys += [key for key in other if key not in keys]
    rows = []
    for key in keys:
        base = original.get(key, "—")
        cells = [{"text": other.get(key, "—"), "changed": other.get(key, "—") != base} for other in others]
        rows.append({"key": key, "original": base, "cells": cells, "changed": any(c["changed"] for c in cells)})
    return rows


def _arm_order(arm: str) -> tuple[bool, bool, str]:
    return (arm != "baseline", arm != "intervention", arm)


def _summary(values: list[float], censored: int) -> dict[str, Any]:
    if not values:
        text = f"{censored} not reached" if censored else "—"
        return {"mean": None, "text": text, "n": 0, "censored": censored}
    mean = statistics.fmean(values)
    text = charts.fmt_number(mean)
    if len(values) > 1:
        text += f" ± {charts.fmt_number(statistics.stdev(values))}"
    text += f" (n={len(values)})" if len(values) > 1 else ""
    if censored:
        text += f", {censored} not reached"
    return {"mean": mean, "text": text, "n": len(values), "censored": censored}


def metric_values(runs: Sequence[Run]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (metric, arm): the mean ± SD over the succeeded runs' measured values (censored ones
    counted apart: "not reached" is a bound, not a value)."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    censored: dict[tuple[str, str], int] = defaultdict(int)
    for run in runs:
        if run.state != Run.State.SUCCEEDED:
            continue
        for m in run.measurements.all():
            if m.censored:
                censored[(m.metric, m.arm)] += 1
            else:
                values[(m.metric, m.arm)].append(m.value)
    return {key: _summary(values.get(key, []), censored.get(key, 0)) for key in set(values) | set(censored)}


def _change(per_arm: dict[str, dict[str, Any]]) -> str:
    base, treated = (per_arm.get("baseline") or {}).get("mean"), (per_arm.get("intervention") or {}).get("mean")
    if base is None or treated is None:
        return "—"
    text = f"{charts.fmt_number(treated - base)}" if treated - base < 0 else f"+{charts.fmt_number(treated - base)}"
    if base > 0 and treated >= 0:
        text += f" ({charts.fmt_percent(treated / base - 1)})"
    return text


def compare(*, finding: Finding, selection: Selection) -> dict[str, Any]:
    """The selected runs and reproductions of ``finding`` side by side (all its reproductions
    when none is selected), their metrics per arm, and each one's config against the original.
    Ids that are not the finding's (or not visible with it) become errors on their field."""
    reproductions = _reproductions(finding).prefetch_related(_runs_prefetch())
    default = not (selection.runs or selection.reproductions)
    choices = list(reproductions[:CHOICES_LIMIT])
    if default:
        chosen_reproductions = choices[:MAX_COMPARED]
    else:
        chosen_reproductions = list(reproductions.filter(pk__in=selection.reproductions))
    runs_by_id = {
        run.pk: run
        for run in Run.objects.filter(pk__in=selection.runs, reproduction__experiment__finding=finding)
        .select_related("reproduction__experiment", "reproduction__requested_by")
        .prefetch_related(Prefetch("measurements", queryset=Measurement.objects.order_by("id")))
    } if selection.runs else {}
    for pk in selection.runs:
        if pk not in runs_by_id:
            selection.add_error("run", f"run {pk} is not a run of this finding")
    found = {r.pk for r in chosen_reproductions}
    for pk in selection.reproductions:
        if pk not in found:
            selection.add_error("reproduction", f"reproduction {pk} is not a reproduction of this finding")

    original = original_reproduction(finding)
    original_runs = list(original.runs.all()) if original else []
    original_run = original_runs[0] if original_runs else None
    items = []
    finding_url = reverse("dashboard:finding-detail", args=[finding.pk])
    for reproduction in chosen_reproductions:
        runs = list(reproduction.runs.all())
        items.append(
            {
                "kind": "reproduction",
                "id": reproduction.pk,
                "label": f"Reproduction #{reproduction.pk}",
                "detail": f"{len(runs)} run{'s' if len(runs) != 1 else ''} · {reproduction.get_source_display()} · "
                f"{reproduction.requested_by.get_username()}",
                "href": f"{finding_url}#experiment-{reproduction.experiment_id}",
                "is_original": original is not None and reproduction.pk == original.pk,
                "config": config_of(reproduction.experiment, reproduction, runs),
                "values": metric_values(runs),
            }
        )
    for pk in selection.runs:
        run = runs_by_id.get(pk)
        if run is None:
            continue
        items.append(
            {
                "kind": "run",
                "id": run.pk,
                "label": f"Run #{run.pk}",
                "detail": f"seed {run.seed} · {run.get_state_display().lower()} · reproduction #{run.reproduction_id}",
                "href": reverse("dashboard:run-detail", args=[run.pk]),
                "is_original": original_run is not None and run.pk == original_run.pk,
                "config": config_of(run.reproduction.experiment, run.reproduction, [run]),
                "values": metric_values([run]) if run.state == Run.State.SUCCEEDED else {},
            }
        )
    # the original, as a run when runs are compared and as a reproduction otherwise
    if original is None:
        original_config: dict[str, str] = {}
        original_label = ""
    elif selection.runs and not selection.reproductions and original_run is not None:
        original_config = config_of(original.experiment, original, [original_run])
        original_label = f"Run #{original_run.pk} (the finding's original run)"
    else:
        original_config = config_of(original.experiment, original, original_runs)
        source = original.get_source_display().lower()
        original_label = f"Reproduction #{original.pk} (the finding's original {source} runs)"
    metrics = sorted({key for item in items for key in item["values"]}, key=lambda k: (k[0], _arm_order(k[1])))
    metric_rows = []
    for metric in sorted({m for m, _ in metrics}):
        arms = [arm for m, arm in metrics if m == metric]
        for arm in arms:
            metric_rows.append(
                {"metric": metric, "arm": arm, "change": False,
                 "cells": [(item["values"].get((metric, arm)) or {"text": "—"})["text"] for item in items]}
            )
        if "baseline" in arms and "intervention" in arms:
            metric_rows.append(
                {"metric": metric, "arm": "intervention − baseline", "change": True,
                 "cells": [_change({a: item["values"].get((metric, a)) or {} for a in arms}) for item in items]}
            )
    diff = config_diff(original_config, [item["config"] for item in items]) if original_config else []
    return {
        "finding": finding,
        "items": items,
        "default_selection": default,
        "original": original,
        "original_run": original_run,
        "original_label": original_label,
        "metric_rows": metric_rows,
        "config_rows": diff,
        "n_differences": sum(row["changed"] for row in diff),
        "max_compared": MAX_COMPARED,
        "choices": [
            {
                "reproduction": r,
                "checked": r.pk in selection.reproductions or (default and r in chosen_reproductions),
                "runs": [{"run": run, "checked": run.pk in selection.runs} for run in r.runs.all()],
            }
            for r in choices
        ],
        "more_choices": len(choices) == CHOICES_LIMIT,
    }


# ---------------------------------------------------------------- exports

RUN_COLUMNS = [
    "finding", "experiment", "plugin", "reproduction", "source", "run", "seed", "state", "plugin_version",
    "hardware", "arm", "metric", "metric_version", "value", "censored",
]


def _run_records(runs: QuerySet[Run]) -> list[dict[str, Any]]:
    """Every run with its experiment's parameters, its environment and its measurements (two
    queries whatever the number of runs)."""
    runs = runs.select_related("reproduction__experiment").prefetch_related(
        Prefetch("measurements", queryset=Measurement.objects.order_by("metric", "arm", "id"))
    ).order_by("id")
    records = []
    for run in runs:
        experiment = run.reproduction.experiment
        records.append(
            {
                "finding": experiment.finding_id,
                "experiment": experiment.pk,
                "plugin": experiment.plugin,
                "params": experiment.params,
                "reproduction": run.reproduction_id,
                "source": run.reproduction.source,
                "run": run.pk,
                "seed": run.seed,
                "state": run.state,
                "plugin_version": run.plugin_version,
                "hardware": run.hardware,
                "environment": run.environment if isinstance(run.environment, dict) else {},
                "started_at": run.started_at.isoformat() if run.started_at else None,
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                "measurements": [
                    {"arm": m.arm, "metric": m.metric, "metric_version": m.metric_version, "value": m.value,
                     "censored": m.censored}
                    for m in run.measurements.all()
                ],
            }
        )
    return records


def run_rows(records: Iterable[dict[str, Any]]) -> list[list[Any]]:
    """CSV rows (``RUN_COLUMNS``): one per measurement, one with empty measurement cells for a
    run that has none."""
    rows = []
    for record in records:
        head = [record[k] for k in RUN_COLUMNS[:10]]
        if not record["measurements"]:
            rows.append([*head, "", "", "", "", ""])
        for m in record["measurements"]:
            rows.append([*head, m["arm"], m["metric"], m["metric_version"], m["value"], m["censored"]])
    return rows


def finding_export(*, finding: Finding) -> dict[str, Any]:
    """A (visible) finding, its effects summary and every run with its measurements."""
    effects = FindingEffects.objects.filter(finding=finding).values_list("data", flat=True).first() or {}
    records = _run_records(Run.objects.filter(reproduction__experiment__finding=finding))
    return {
        "finding": {
            "id": finding.pk,
            "title": finding.title,
            "kind": finding.kind,
            "status": finding.status,
            "visibility": finding.visibility,
            "tags": sorted(t.name for t in finding.tags.all()),
            "created_at": finding.created_at.isoformat(),
        },
        "effects": {
            "axis_scores": effects.get("axis_scores"),
            "lean": effects.get("lean"),
            "claims": effects.get("claims") or [],
            "metrics": effects.get("metrics") or [],
        },
        "runs": records,
    }


def run_export(*, run: Run) -> dict[str, Any]:
    (record,) = _run_records(Run.objects.filter(pk=run.pk))
    return {"run": record}


LANDSCAPE_COLUMNS = [
    "finding", "title", "kind", "status", "lean", "safety_score", "safety_ci_low", "safety_ci_high",
    "capability_score", "capability_ci_low", "capability_ci_high", "url",
]


def landscape_export(*, user: Any, tag: str = "", kind: str = "", plugin: str = "") -> dict[str, Any]:
    """Every visible finding the filters select with its two scores and lean (one query for the
    rows, whatever their number), and the aggregate answer of the landscape."""
    from registry.effects.selectors import landscape_get

    findings = finding_list(user=user).prefetch_related(None)
    if tag:
        tagged = Finding.tags.through.objects.filter(finding_id=OuterRef("pk"), tag__name=tag.strip().lower())
        findings = findings.filter(Exists(tagged))
    if kind:
        findings = findings.filter(kind=kind)
    if plugin:
        findings = findings.filter(
            Exists(Experiment.objects.filter(finding_id=OuterRef("pk"), plugin=plugin, retracted_at__isnull=True))
        )
    rows = []
    url = reverse("dashboard:finding-detail", args=[987654321]).replace("987654321", "{}")  # one reverse
    columns = (
        "id", "title", "kind", "status", "effects_cache__lean", "effects_cache__data__axis_scores",
    )
    for values in findings.order_by("id").values_list(*columns):
        pk, title, kind_, status, lean, scores = values
        scores = scores if isinstance(scores, dict) else {}
        safety, capability = scores.get("safety") or {}, scores.get("capability") or {}
        rows.append(
            {
                "finding": pk, "title": title, "kind": kind_, "status": status, "lean": lean or "neither",
                "safety_score": safety.get("score"), "safety_ci_low": safety.get("ci_low"),
                "safety_ci_high": safety.get("ci_high"), "capability_score": capability.get("score"),
                "capability_ci_low": capability.get("ci_low"), "capability_ci_high": capability.get("ci_high"),
                "url": url.format(pk),
            }
        )
    data = landscape_get(user=user, tag=tag or None, kind=kind or None, plugin=plugin or None, page_size=1)
    aggregate = dict(data.get("aggregate") or {})
    progress = dict(aggregate.get("differential_progress") or {})
    progress.pop("findings", None)  # the page's residuals: not the export's rows
    aggregate["differential_progress"] = progress
    return {"filters": {"tag": tag, "kind": kind, "plugin": plugin}, "aggregate": aggregate, "findings": rows}
