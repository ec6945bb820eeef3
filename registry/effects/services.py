"""Effects of a finding: recomputed when one of its runs finishes, cached in ``FindingEffects``.

Plain functions; every number comes from :mod:`registry.effects.stats` (no maths here). The
pipeline, one small step per helper (see docs/statistics.md for the reviewer's version):

1. gather the measurements of the finding's *succeeded* runs and pair the ``baseline`` and
   ``intervention`` arms within each run (a run is one seed);
2. group the pairs per ``(plugin, metric, metric_version)``: results computed under different
   definitions of a metric are never pooled;
3. per group: the effect from the deciding rung of evidence (registry runs when there are
   any, else self-reported ones), plus effects per source, per hardware and per reproduction
   with a heterogeneity check;
4. per current claim: a verdict at the Bonferroni-corrected confidence across the finding's
   current claims, Holm-adjusted p-values, a minimum-detectable-effect warning, the runs used;
5. axis scores (safety, capability), the lean flag, the evidence rungs reached, the status;
6. store: ``ClaimVerdict`` rows (event ``finding.verdict_changed`` on a change), the
   finding's status (event ``finding.status_changed``), and the JSON cache.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.db import transaction

from plugins.registry import PluginNotFound, PluginUnavailable, get_plugin
from plugins.sdk import BASELINE, INTERVENTION
from registry.effects import stats
from registry.effects.models import ClaimVerdict, FindingEffects
from registry.events.services import event_emit
from registry.findings.models import Claim, Finding
from registry.reproductions.models import Measurement, MetricDefinition, Reproduction, Run

logger = logging.getLogger(__name__)

CONFIDENCE = 0.95
AXES = ("safety", "capability")

SELF_REPORTED = Reproduction.Source.SELF_REPORTED.value
REGISTRY = Reproduction.Source.REGISTRY.value
RUNG_SELF_REPORTED = "self_reported"
RUNG_REGISTRY = "registry"
RUNG_REGISTRY_INDEPENDENT = "registry_independent"
RUNG_SECOND_HARDWARE = "second_hardware"
RUNG_ORDER = (RUNG_SELF_REPORTED, RUNG_REGISTRY, RUNG_REGISTRY_INDEPENDENT, RUNG_SECOND_HARDWARE)

CONFIRMED = ClaimVerdict.Verdict.CONFIRMED.value
REFUTED = ClaimVerdict.Verdict.REFUTED.value
INCONCLUSIVE = ClaimVerdict.Verdict.INCONCLUSIVE.value
UNKNOWN_HARDWARE = "unknown"


# ---------------------------------------------------------------- data shapes


class MetricKey(NamedTuple):
    plugin: str
    metric: str
    version: int


@dataclass(frozen=True)
class MetricInfo:
    """What the plugin declared about a metric (or the catalogue remembers of an old version)."""

    axis: str
    higher_is_better: bool
    unit: str
    interval: str
    declared: bool


@dataclass(frozen=True)
class Pair:
    """One run's baseline and intervention values of one metric (same run = same seed)."""

    run_id: int
    reproduction_id: int
    experiment_id: int
    source: str
    requested_by_id: int
    hardware: str
    seed: int
    baseline: float
    intervention: float


@dataclass(frozen=True)
class MetricGroup:
    key: MetricKey
    info: MetricInfo
    pairs: tuple[Pair, ...]


# ---------------------------------------------------------------- 1-2. gather, pair, group


def _measurement_rows(finding_id: int) -> list[dict[str, Any]]:
    return list(
        Measurement.objects.filter(
            run__reproduction__experiment__finding_id=finding_id,
            run__state=Run.State.SUCCEEDED,
            arm__in=(BASELINE, INTERVENTION),
        )
        .order_by("run_id", "id")
        .values(
            "run_id", "arm", "metric", "metric_version", "value", "run__seed", "run__hardware",
            "run__reproduction_id", "run__reproduction__experiment_id", "run__reproduction__source",
            "run__reproduction__requested_by_id",
            "run__reproduction__experiment__plugin",
        )
    )


def _pairs_by_metric(rows: Iterable[dict[str, Any]]) -> dict[MetricKey, list[Pair]]:
    """Pair the two arms within each run; a run missing an arm (or with the arms measured under
    different metric versions) contributes no pair for that metric."""
    arms: dict[tuple[int, MetricKey], dict[str, float]] = defaultdict(dict)
    runs: dict[int, dict[str, Any]] = {}
    for row in rows:
        key = MetricKey(row["run__reproduction__experiment__plugin"], row["metric"], row["metric_version"])
        arms[(row["run_id"], key)][row["arm"]] = row["value"]
        runs[row["run_id"]] = row
    grouped: dict[MetricKey, list[Pair]] = defaultdict(list)
    for (run_id, key), values in arms.items():
        if BASELINE not in values or INTERVENTION not in values:
            continue
        run = runs[run_id]
        grouped[key].append(
            Pair(
                run_id=run_id,
                reproduction_id=run["run__reproduction_id"],
                experiment_id=run["run__reproduction__experiment_id"],
                source=run["run__reproduction__source"],
                requested_by_id=run["run__reproduction__requested_by_id"],
                hardware=run["run__hardware"] or UNKNOWN_HARDWARE,
                seed=run["run__seed"],
                baseline=values[BASELINE],
                intervention=values[INTERVENTION],
            )
        )
    return grouped


def _plugin_class(name: str) -> Any | None:
    try:
        return get_plugin(name)
    except (PluginNotFound, PluginUnavailable):
        return None


def _metric_catalogue(plugins: Iterable[str]) -> tuple[dict[MetricKey, MetricInfo], dict[str, str]]:
    """Metric declarations: the catalogue's rows (every version seen), overlaid by what the
    installed plugin declares now; and per plugin its interval method (else "t")."""
    classes = {name: _plugin_class(name) for name in set(plugins)}
    interval = {name: getattr(cls, "interval", "t") if cls else "t" for name, cls in classes.items()}
    catalogue: dict[MetricKey, MetricInfo] = {}
    for row in MetricDefinition.objects.filter(plugin__in=classes):
        catalogue[MetricKey(row.plugin, row.name, row.version)] = MetricInfo(
            row.axis, row.higher_is_better, row.unit, interval[row.plugin], True
        )
    for name, cls in classes.items():
        for metric in getattr(cls, "metrics", ()):
            catalogue[MetricKey(name, metric.name, metric.version)] = MetricInfo(
                metric.axis.value, metric.higher_is_better, metric.unit, interval[name], True
            )
    return catalogue, interval


def _metric_groups(finding_id: int) -> list[MetricGroup]:
    pairs = _pairs_by_metric(_measurement_rows(finding_id))
    catalogue, interval = _metric_catalogue(key.plugin for key in pairs)
    groups = []
    for key in sorted(pairs):
        # A metric nobody declared (the runner rejects those; rows written around it) is shown
        # but counts on no axis.
        info = catalogue.get(key) or MetricInfo("diagnostic", True, "", interval[key.plugin], False)
        groups.append(MetricGroup(key, info, tuple(sorted(pairs[key], key=lambda p: (p.seed, p.run_id)))))
    return groups


# ---------------------------------------------------------------- 3. effects


def _per_seed(pairs: Iterable[Pair]) -> tuple[list[float], list[float]]:
    """Baseline and intervention values, one per distinct (experiment, seed).

    Runs of one experiment sharing a seed (the same seed reproduced twice, or on two machines) are
    technical replicates, not independent samples: their values are averaged per arm so they count
    once. Two experiments of a finding (other parameters) are different samples even on one seed.
    """
    by_seed: dict[tuple[int, int], list[Pair]] = defaultdict(list)
    for pair in pairs:
        by_seed[(pair.experiment_id, pair.seed)].append(pair)
    baseline, intervention = [], []
    for seed in sorted(by_seed):
        same = by_seed[seed]
        baseline.append(sum(p.baseline for p in same) / len(same))
        intervention.append(sum(p.intervention for p in same) / len(same))
    return baseline, intervention


def _effect(pairs: Iterable[Pair], *, interval: str, confidence: float = CONFIDENCE) -> stats.EffectEstimate:
    baseline, intervention = _per_seed(pairs)
    return stats.paired_effect(baseline, intervention, confidence=confidence, interval=interval)


def _split(pairs: Iterable[Pair], key: Callable[[Pair], Any]) -> dict[Any, list[Pair]]:
    out: dict[Any, list[Pair]] = defaultdict(list)
    for pair in pairs:
        out[key(pair)].append(pair)
    return dict(out)


def _deciding_pairs(pairs: Iterable[Pair]) -> tuple[str, list[Pair]]:
    """The evidence ladder: registry runs outrank self-reported ones."""
    by_source = _split(pairs, lambda p: p.source)
    if by_source.get(REGISTRY):
        return REGISTRY, by_source[REGISTRY]
    return SELF_REPORTED, by_source.get(SELF_REPORTED, [])


def _run_ids(pairs: Iterable[Pair]) -> list[int]:
    return sorted({p.run_id for p in pairs})


def _by_hardware(group: MetricGroup) -> tuple[list[dict[str, Any]], dict[str, stats.EffectEstimate]]:
    entries, estimates = [], {}
    for hardware, pairs in sorted(_split(group.pairs, lambda p: p.hardware).items()):
        estimates[hardware] = _effect(pairs, interval=group.info.interval)
        entries.append(
            {
                "hardware": hardware,
                "sources": sorted({p.source for p in pairs}),
                "n_runs": len(pairs),
                "effect": estimates[hardware].to_dict(),
            }
        )
    return entries, estimates


def _by_reproduction(group: MetricGroup) -> tuple[list[dict[str, Any]], dict[int, stats.EffectEstimate]]:
    entries, estimates = [], {}
    for reproduction_id, pairs in sorted(_split(group.pairs, lambda p: p.reproduction_id).items()):
        estimates[reproduction_id] = _effect(pairs, interval=group.info.interval)
        entries.append(
            {
                "reproduction": reproduction_id,
                "source": pairs[0].source,
                "requested_by": pairs[0].requested_by_id,
                "hardware": sorted({p.hardware for p in pairs}),
                "n_runs": len(pairs),
                "effect": estimates[reproduction_id].to_dict(),
            }
        )
    return entries, estimates


def _metric_entry(group: MetricGroup) -> tuple[dict[str, Any], stats.EffectEstimate]:
    """One metric's effects; returns the JSON entry and the deciding estimate (for axis scores)."""
    rung, deciding = _deciding_pairs(group.pairs)
    estimate = _effect(deciding, interval=group.info.interval)
    by_source = {
        source: _effect(pairs, interval=group.info.interval).to_dict()
        for source, pairs in _split(group.pairs, lambda p: p.source).items()
    }
    hardware_entries, hardware_estimates = _by_hardware(group)
    reproduction_entries, reproduction_estimates = _by_reproduction(group)
    entry = {
        "plugin": group.key.plugin,
        "metric": group.key.metric,
        "metric_version": group.key.version,
        "axis": group.info.axis,
        "higher_is_better": group.info.higher_is_better,
        "unit": group.info.unit,
        "declared": group.info.declared,
        "interval": group.info.interval,
        "evidence": rung,
        "n_runs": len(deciding),
        "run_ids": _run_ids(deciding),
        "effect": estimate.to_dict(),
        "by_source": {REGISTRY: by_source.get(REGISTRY), SELF_REPORTED: by_source.get(SELF_REPORTED)},
        "by_hardware": hardware_entries,
        "by_reproduction": reproduction_entries,
        "heterogeneity": {
            "hardware": stats.heterogeneity(list(hardware_estimates.values())).to_dict(),
            "reproduction": stats.heterogeneity(list(reproduction_estimates.values())).to_dict(),
        },
    }
    return entry, estimate


# ---------------------------------------------------------------- evidence rungs


def _rungs(pairs: Iterable[Pair], author_ids: set[int]) -> list[str]:
    """Rungs of the reproducibility ladder reached by these runs, lowest first."""
    pairs = list(pairs)
    registry = [p for p in pairs if p.source == REGISTRY]
    reached = set()
    if any(p.source == SELF_REPORTED for p in pairs):
        reached.add(RUNG_SELF_REPORTED)
    if registry:
        reached.add(RUNG_REGISTRY)
    if any(p.requested_by_id not in author_ids for p in registry):
        reached.add(RUNG_REGISTRY_INDEPENDENT)
    if len({p.hardware for p in registry if p.hardware != UNKNOWN_HARDWARE}) >= 2:
        reached.add(RUNG_SECOND_HARDWARE)
    return [rung for rung in RUNG_ORDER if rung in reached]


# ---------------------------------------------------------------- 4. claims and verdicts


def _claim_group(claim: Claim, groups: list[MetricGroup]) -> MetricGroup | None:
    """The group a claim is decided on: its metric at the newest metric version with data
    (older versions are reported under ``metrics`` but never pooled in)."""
    candidates = [g for g in groups if g.key.metric == claim.metric]
    if not candidates:
        return None
    return max(
        candidates,
        key=lambda g: (g.key.version, sum(p.source == REGISTRY for p in g.pairs), len(g.pairs), g.key.plugin),
    )


def _verdict(
    claim: Claim, estimate: stats.EffectEstimate, info: MetricInfo
) -> tuple[str, str | None]:
    """The claim's verdict from an estimate (at whatever confidence it was computed)."""
    try:
        return (
            stats.claim_verdict(
                estimate,
                direction=claim.direction,
                min_relative_effect=claim.min_relative_effect,
                margin=claim.margin,
                higher_is_better=info.higher_is_better,
            ),
            None,
        )
    except ValueError as exc:  # a malformed claim (e.g. written around the services)
        return INCONCLUSIVE, f"claim cannot be checked: {exc}"


def _claimed_magnitude(claim: Claim) -> float | None:
    return claim.margin if claim.direction == Claim.Direction.NON_INFERIOR else claim.min_relative_effect


def _source_verdict(
    claim: Claim, group: MetricGroup, pairs: list[Pair], confidence: float
) -> dict[str, Any] | None:
    if not pairs:
        return None
    estimate = _effect(pairs, interval=group.info.interval, confidence=confidence)
    verdict, _ = _verdict(claim, estimate, group.info)
    return {"verdict": verdict, "n_runs": len(pairs), "run_ids": _run_ids(pairs), "effect": estimate.to_dict()}


def _reproduction_verdicts(
    claim: Claim, group: MetricGroup, pairs: list[Pair], confidence: float
) -> list[dict[str, Any]]:
    out = []
    for reproduction_id, own in sorted(_split(pairs, lambda p: p.reproduction_id).items()):
        estimate = _effect(own, interval=group.info.interval, confidence=confidence)
        verdict, _ = _verdict(claim, estimate, group.info)
        out.append({"reproduction": reproduction_id, "source": own[0].source, "n_runs": len(own), "verdict": verdict})
    return out


def _claim_base(claim: Claim) -> dict[str, Any]:
    return {
        "claim": claim.pk,
        "metric": claim.metric,
        "direction": claim.direction,
        "min_relative_effect": claim.min_relative_effect,
        "margin": claim.margin,
        "statement": claim.statement,
        "version": claim.version,
    }


def _claim_without_data(claim: Claim) -> dict[str, Any]:
    return {
        **_claim_base(claim),
        "plugin": None,
        "metric_version": None,
        "verdict": INCONCLUSIVE,
        "evidence": "",
        "effect": None,
        "p_value": None,
        "p_holm": None,
        "mde_warning": None,
        "by_source": {REGISTRY: None, SELF_REPORTED: None},
        "reproductions": [],
        "reproductions_disagree": False,
        "run_ids": [],
        "rungs": [],
        "warnings": ["no succeeded run measured this metric yet"],
    }


def _claim_entry(
    claim: Claim, groups: list[MetricGroup], confidence: float, author_ids: set[int]
) -> dict[str, Any]:
    group = _claim_group(claim, groups)
    if group is None:
        return _claim_without_data(claim)
    rung, deciding = _deciding_pairs(group.pairs)
    estimate = _effect(deciding, interval=group.info.interval, confidence=confidence)
    verdict, problem = _verdict(claim, estimate, group.info)
    by_source = _split(group.pairs, lambda p: p.source)
    reproductions = _reproduction_verdicts(claim, group, deciding, confidence)
    decided = {r["verdict"] for r in reproductions}
    mde = stats.mde_warning(estimate, _claimed_magnitude(claim), alpha=1.0 - confidence)
    older = sorted({g.key.version for g in groups if g.key.metric == claim.metric} - {group.key.version})
    warnings = [*estimate.warnings, *([problem] if problem else [])]
    if older:
        warnings.append(f"decided on metric version {group.key.version}; versions {older} are reported apart")
    return {
        **_claim_base(claim),
        "plugin": group.key.plugin,
        "metric_version": group.key.version,
        "verdict": verdict,
        "evidence": rung,
        "effect": estimate.to_dict(),
        "p_value": estimate.p_value,
        "p_holm": None,
        "mde_warning": mde,
        "by_source": {
            source: _source_verdict(claim, group, by_source.get(source, []), confidence)
            for source in (REGISTRY, SELF_REPORTED)
        },
        "reproductions": reproductions,
        "reproductions_disagree": {CONFIRMED, REFUTED} <= decided,
        "run_ids": _run_ids(deciding),
        "rungs": _rungs(group.pairs, author_ids),
        "warnings": warnings,
    }


def _claim_entries(claims: list[Claim], groups: list[MetricGroup], author_ids: set[int]) -> tuple[list, float]:
    """Every current claim's verdict, at the Bonferroni-corrected confidence, with Holm p-values."""
    confidence = stats.corrected_confidence(CONFIDENCE, max(1, len(claims)))
    entries = [_claim_entry(claim, groups, confidence, author_ids) for claim in claims]
    for entry, adjusted in zip(entries, stats.holm_bonferroni([e["p_value"] for e in entries]), strict=True):
        entry["p_holm"] = adjusted
    return entries, confidence


# ---------------------------------------------------------------- 5. scores, status


def _newest_versions(groups: list[MetricGroup]) -> list[MetricGroup]:
    newest: dict[tuple[str, str], MetricGroup] = {}
    for group in groups:
        key = (group.key.plugin, group.key.metric)
        if key not in newest or group.key.version > newest[key].key.version:
            newest[key] = group
    return list(newest.values())


def _axis_scores(
    groups: list[MetricGroup], estimates: dict[MetricKey, stats.EffectEstimate]
) -> dict[str, dict[str, Any] | None]:
    """Safety and capability scores from each metric's newest version (diagnostics excluded)."""
    scores: dict[str, stats.AxisScore | None] = {}
    for axis in AXES:
        items = [
            (estimates[g.key], g.info.higher_is_better)
            for g in _newest_versions(groups)
            if g.info.axis == axis
        ]
        scores[axis] = stats.axis_score(items, confidence=CONFIDENCE) if items else None
    return scores


def _finding_status(claims: list[dict[str, Any]], has_runs: bool) -> str:
    if not has_runs:
        return Finding.Status.UNREPRODUCED.value
    decided = {c["verdict"] for c in claims} & {CONFIRMED, REFUTED}
    if decided == {CONFIRMED, REFUTED} or any(c["reproductions_disagree"] for c in claims):
        return Finding.Status.CONTESTED.value
    if decided == {CONFIRMED}:
        return Finding.Status.REPRODUCED.value
    if decided == {REFUTED}:
        return Finding.Status.FAILED_TO_REPRODUCE.value
    return Finding.Status.UNREPRODUCED.value


# ---------------------------------------------------------------- 6. store and announce


def _store_verdicts(finding: Finding, claims: list[Claim], entries: list[dict[str, Any]]) -> None:
    existing = {v.claim_id: v for v in ClaimVerdict.objects.filter(claim__in=claims)}
    for claim, entry in zip(claims, entries, strict=True):
        row = existing.get(claim.pk)
        old = row.verdict if row else None
        new = entry["verdict"]
        if row is None:
            row = ClaimVerdict(claim=claim)
        row.verdict, row.evidence, row.run_ids = new, entry["evidence"], entry["run_ids"]
        row.save()
        if (old or INCONCLUSIVE) != new:
            event_emit(
                type="finding.verdict_changed",
                finding_id=finding.pk,
                plugin=entry["plugin"] or "",
                payload={
                    "finding": finding.pk,
                    "claim": claim.pk,
                    "metric": claim.metric,
                    "old": old,
                    "new": new,
                    "evidence": entry["evidence"],
                },
            )


def _store_status(finding: Finding, status: str) -> None:
    old = finding.status
    if old == status:
        return
    Finding.objects.filter(pk=finding.pk).update(status=status)
    finding.status = status
    event_emit(
        type="finding.status_changed",
        finding_id=finding.pk,
        payload={"finding": finding.pk, "old": old, "new": status},
    )


def _effects_data(finding: Finding, claims: list[Claim]) -> dict[str, Any]:
    """Everything computed for one finding, JSON-safe (no writes)."""
    author_ids = set(finding.authors.values_list("pk", flat=True))
    groups = _metric_groups(finding.pk)
    metric_entries, estimates = [], {}
    for group in groups:
        entry, estimates[group.key] = _metric_entry(group)
        metric_entries.append(entry)
    claim_entries, claims_confidence = _claim_entries(claims, groups, author_ids)
    scores = _axis_scores(groups, estimates)
    all_pairs = [p for g in groups for p in g.pairs]
    return {
        "finding": finding.pk,
        "status": _finding_status(claim_entries, bool(all_pairs)),
        "confidence": CONFIDENCE,
        "claims_confidence": claims_confidence,
        "n_runs": len({p.run_id for p in all_pairs}),
        "run_ids": _run_ids(all_pairs),
        "evidence_rungs": _rungs(all_pairs, author_ids),
        "metrics": metric_entries,
        "claims": claim_entries,
        "axis_scores": {axis: score.to_dict() if score else None for axis, score in scores.items()},
        "lean": stats.lean_flag(scores["safety"], scores["capability"]),
    }


@transaction.atomic
def finding_effects_recompute(*, finding_id: int) -> dict:
    """Recompute, store and return a finding's effects (inside the caller's transaction).

    The finding row is locked first, so two runs finishing at once recompute one after the
    other and announce each verdict change once.
    """
    finding = Finding.objects.select_for_update().filter(pk=finding_id).first()
    if finding is None:
        return {}
    claims = list(finding.claims.filter(is_current=True).order_by("id"))
    data = _effects_data(finding, claims)
    _store_verdicts(finding, claims, data["claims"])
    _store_status(finding, data["status"])
    FindingEffects.objects.update_or_create(finding=finding, defaults={"data": data})
    return data
