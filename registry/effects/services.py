"""Effects of a finding, computed by one task after every change that can move them, cached in
``FindingEffects``. Reads never compute: they serve the cache (see ``selectors``).

Plain functions; every number comes from :mod:`registry.effects.stats` (no maths here). The
pipeline, one small step per helper (docs/statistics.md is the reviewer's version):

1. gather the measurements of the finding's *succeeded* runs in experiments that are not
   retracted, and pair the ``baseline`` and ``intervention`` arms within each run (a run is one
   seed);
2. group the pairs per experiment and ``(plugin, metric, metric_version)``: experiments (other
   plugins or parameters) are never pooled, nor are results under different metric definitions;
3. per group: the effect on the metric's scale from the deciding rung of evidence (registry runs
   when there are any, else self-reported ones), plus effects per source, per hardware and per
   reproduction with a heterogeneity check;
4. per current claim: a verdict in every experiment that measured its metric, at the Bonferroni
   confidence across all (claim, experiment) tests, combined into one verdict per claim;
5. axis scores per experiment; the finding's summary scores come from the experiment with the
   most seeds (never a pool of experiments); the lean flag, the evidence rungs, the status;
6. store: ``ClaimVerdict`` rows (event ``finding.verdict_changed`` on a change), the finding's
   status (event ``finding.status_changed``), and the JSON cache.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connections, transaction
from django.db.models import DateTimeField, Func, IntegerField, Max, Q
from django.db.models.functions import Cast, Now
from django.utils import timezone
from interp_registry.sdk import BASELINE, INTERVENTION

from plugins.registry import PluginNotFound, PluginUnavailable, get_plugin
from registry.effects import stats
from registry.effects.models import ClaimVerdict, FindingEffects
from registry.events.services import event_emit
from registry.findings.models import Claim, Finding
from registry.reproductions.models import Experiment, Measurement, MetricDefinition, Reproduction, Run
from worker.celery import app as celery_app

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
SUMMARY_METHOD = (
    "scores of the experiment with the most seeds; experiments with other plugins or parameters are "
    "reported apart under 'experiments', never pooled"
)


def min_seeds() -> int:
    """The documented minimum number of seeds (distinct per experiment) for any verdict."""
    return int(getattr(settings, "EFFECTS_MIN_SEEDS", 3))


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
    scale: str
    time_to_event: bool
    declared: bool


class Pair(NamedTuple):
    """One run's baseline and intervention values of one metric (same run = same seed). A named
    tuple: a recompute builds one per run and metric (10,000 runs: tens of thousands)."""

    run_id: int
    reproduction_id: int
    experiment_id: int
    source: str
    requested_by_id: int
    hardware: str
    seed: int
    baseline: float
    intervention: float
    baseline_censored: bool = False
    intervention_censored: bool = False


@dataclass(frozen=True)
class MetricGroup:
    experiment_id: int
    key: MetricKey
    info: MetricInfo
    pairs: tuple[Pair, ...]


@dataclass(frozen=True)
class SeedValues:
    """One value per distinct seed of an experiment (technical replicates averaged)."""

    seeds: tuple[int, ...]
    baseline: tuple[float, ...]
    intervention: tuple[float, ...]
    baseline_censored: tuple[bool, ...]
    intervention_censored: tuple[bool, ...]


# ---------------------------------------------------------------- 1-2. gather, pair, group


class _RunInfo(NamedTuple):
    seed: int
    hardware: str
    reproduction_id: int
    experiment_id: int
    source: str
    requested_by_id: int
    plugin: str


def _measurement_rows(finding_id: int) -> tuple[list[tuple], dict[int, _RunInfo]]:
    """The baseline and intervention measurements of the finding's succeeded runs in experiments
    that are not retracted, paired within each run, as plain tuples ``(run_id, metric,
    metric_version, baseline, intervention, baseline_censored, intervention_censored)``, and what
    each run contributes (seed, hardware, reproduction, ...).

    Three queries whatever the number of runs: the reproductions, the runs (by the foreign-key
    indexes experiment -> reproduction -> run), and the measurements of those runs, an index-only
    scan of the covering ``unique_measurement_covering`` index (``Measurement``'s docstring)."""
    reproductions = {
        pk: (experiment_id, source, requested_by_id, plugin)
        for pk, experiment_id, source, requested_by_id, plugin in Reproduction.objects.filter(
            experiment__finding_id=finding_id, experiment__retracted_at__isnull=True
        ).order_by().values_list("id", "experiment_id", "source", "requested_by_id", "experiment__plugin")
    }
    runs = Run.objects.filter(
        reproduction__experiment__finding_id=finding_id,
        reproduction__experiment__retracted_at__isnull=True,
        state=Run.State.SUCCEEDED,
    ).order_by()
    infos = {
        pk: _RunInfo(seed, hardware or UNKNOWN_HARDWARE, reproduction_id, *reproductions[reproduction_id])
        for pk, seed, hardware, reproduction_id in runs.values_list("id", "seed", "hardware", "reproduction_id")
        if reproduction_id in reproductions  # else created after the first query: the next recompute has it
    }
    # paired in SQL: one row per (run, metric, version) that has both arms ((run, arm, metric) is
    # unique, so each MAX is of one value, returned as stored)
    baseline, intervention = Q(arm=BASELINE), Q(arm=INTERVENTION)
    censored = Cast("censored", IntegerField())
    rows = list(
        Measurement.objects.filter(run_id__in=runs.values("id"), arm__in=(BASELINE, INTERVENTION))
        .order_by()
        .values("run_id", "metric", "metric_version")
        .annotate(
            b=Max("value", filter=baseline), i=Max("value", filter=intervention),
            bc=Max(censored, filter=baseline), ic=Max(censored, filter=intervention),
        )
        .filter(b__isnull=False, i__isnull=False)
        .values_list("run_id", "metric", "metric_version", "b", "i", "bc", "ic")
    )
    return rows, infos


def _pairs_by_group(rows: Iterable[tuple], runs: dict[int, _RunInfo]) -> dict[tuple[int, MetricKey], list[Pair]]:
    """Group the paired rows ``(run_id, metric, version, baseline, intervention, baseline_censored,
    intervention_censored)``; a run missing an arm (or with the arms measured under different
    metric versions) has no row for that metric (``_measurement_rows`` pairs within each run)."""
    grouped: dict[tuple[int, MetricKey], list[Pair]] = defaultdict(list)
    keys: dict[tuple[str, str, int], MetricKey] = {}
    for run_id, metric, version, baseline, intervention, baseline_censored, intervention_censored in rows:
        run = runs.get(run_id)
        if run is None:  # finished (and measured) after the runs were read: the next recompute has it
            continue
        key = keys.get((run.plugin, metric, version))
        if key is None:
            key = keys[(run.plugin, metric, version)] = MetricKey(run.plugin, metric, version)
        grouped[(run.experiment_id, key)].append(
            Pair(run_id, run.reproduction_id, run.experiment_id, run.source, run.requested_by_id, run.hardware,
                 run.seed, baseline, intervention, bool(baseline_censored), bool(intervention_censored))
        )
    return grouped


def _plugin_class(name: str) -> Any | None:
    try:
        return get_plugin(name)
    except (PluginNotFound, PluginUnavailable):
        return None


def metric_catalogue(plugins: Iterable[str]) -> dict[MetricKey, MetricInfo]:
    """Metric declarations: the catalogue's rows (every version seen), overlaid by what the
    installed plugin declares now."""
    classes = {name: _plugin_class(name) for name in set(plugins)}
    catalogue: dict[MetricKey, MetricInfo] = {}
    for row in MetricDefinition.objects.filter(plugin__in=classes):
        catalogue[MetricKey(row.plugin, row.name, row.version)] = MetricInfo(
            row.axis, row.higher_is_better, row.unit, row.scale, row.time_to_event, True
        )
    for name, cls in classes.items():
        for metric in getattr(cls, "metrics", ()):
            catalogue[MetricKey(name, metric.name, metric.version)] = MetricInfo(
                metric.axis.value, metric.higher_is_better, metric.unit, str(metric.scale),
                bool(metric.time_to_event), True,
            )
    return catalogue


def _undeclared_info(key: MetricKey, catalogue: dict[MetricKey, MetricInfo]) -> MetricInfo:
    """A metric version nobody declared (rows written around the runner) keeps the scale and
    orientation of another version of the same metric if there is one; it counts on no axis."""
    for other, info in sorted(catalogue.items()):
        if (other.plugin, other.metric) == (key.plugin, key.metric):
            return MetricInfo("diagnostic", info.higher_is_better, info.unit, info.scale, info.time_to_event, False)
    return MetricInfo("diagnostic", True, "", "difference", False, False)


def _metric_groups(finding_id: int) -> list[MetricGroup]:
    pairs = _pairs_by_group(*_measurement_rows(finding_id))
    catalogue = metric_catalogue(key.plugin for _, key in pairs)
    groups = []
    for experiment_id, key in sorted(pairs):
        # A metric nobody declared (the runner rejects those; rows written around it) is shown
        # on the difference scale but counts on no axis.
        info = catalogue.get(key) or _undeclared_info(key, catalogue)
        ordered = tuple(sorted(pairs[(experiment_id, key)], key=lambda p: (p.seed, p.run_id)))
        groups.append(MetricGroup(experiment_id, key, info, ordered))
    return groups


# ---------------------------------------------------------------- 3. effects


def _per_seed(pairs: Iterable[Pair]) -> SeedValues:
    """Baseline and intervention values, one per distinct seed of the experiment.

    Runs sharing a seed (the same seed reproduced twice, or on two machines) are technical
    replicates, not independent samples: their values are averaged per arm so they count once. An
    average that includes a censored value is itself only a lower bound, so it stays censored.
    """
    return _memoised("per_seed", pairs, lambda: _per_seed_values(pairs))


def _per_seed_values(pairs: Iterable[Pair]) -> SeedValues:
    ordered = sorted(pairs, key=_SEED)  # stable: replicates keep their order
    seeds = [p.seed for p in ordered]
    if len(set(seeds)) == len(seeds):  # no replicates (the common case): each seed's values as
        # they are, computed as the average of one value is below: (0 + x) / 1, bit for bit
        return SeedValues(
            seeds=tuple(seeds),
            baseline=tuple([(0 + p.baseline) / 1 for p in ordered]),
            intervention=tuple([(0 + p.intervention) / 1 for p in ordered]),
            baseline_censored=tuple([p.baseline_censored for p in ordered]),
            intervention_censored=tuple([p.intervention_censored for p in ordered]),
        )
    by_seed: dict[int, list[Pair]] = defaultdict(list)
    for pair in ordered:
        by_seed[pair.seed].append(pair)
    rows = list(by_seed.values())
    return SeedValues(
        seeds=tuple(by_seed),
        baseline=tuple(sum(p.baseline for p in same) / len(same) for same in rows),
        intervention=tuple(sum(p.intervention for p in same) / len(same) for same in rows),
        baseline_censored=tuple(any(p.baseline_censored for p in same) for same in rows),
        intervention_censored=tuple(any(p.intervention_censored for p in same) for same in rows),
    )


_SEED = attrgetter("seed")


def _effect(pairs: Iterable[Pair], info: MetricInfo, *, confidence: float = CONFIDENCE) -> stats.EffectEstimate:
    values = _per_seed(pairs)
    censored = info.time_to_event and (any(values.baseline_censored) or any(values.intervention_censored))
    return stats.paired_effect(
        values.baseline,
        values.intervention,
        scale=info.scale,
        confidence=confidence,
        baseline_censored=values.baseline_censored if censored else None,
        intervention_censored=values.intervention_censored if censored else None,
    )


def _split(pairs: Iterable[Pair], attribute: str) -> dict[Any, list[Pair]]:
    """The pairs by the value of one of their attributes (memoised within a recompute)."""

    def split() -> dict[Any, list[Pair]]:
        out: dict[Any, list[Pair]] = defaultdict(list)
        get = attrgetter(attribute)
        for pair in pairs:
            out[get(pair)].append(pair)
        return dict(out)

    return _memoised(("split", attribute), pairs, split)


#: Within one ``effects_data`` call: results already computed for a given list of pairs (by the
#: list's identity; the list is kept alive with its result, so the identity cannot be reused).
_MEMO: ContextVar[dict | None] = ContextVar("effects_memo", default=None)


def _memoised(kind: Any, pairs: Any, compute: Callable[[], Any]) -> Any:
    memo = _MEMO.get()
    if memo is None or not isinstance(pairs, (list, tuple)):
        return compute()
    key = (kind, id(pairs))
    hit = memo.get(key)
    if hit is not None and hit[0] is pairs:
        return hit[1]
    value = compute()
    memo[key] = (pairs, value)
    return value


def _deciding_pairs(pairs: Iterable[Pair]) -> tuple[str, list[Pair]]:
    """The evidence ladder: registry runs outrank self-reported ones."""
    by_source = _split(pairs, "source")
    if by_source.get(REGISTRY):
        return REGISTRY, by_source[REGISTRY]
    return SELF_REPORTED, by_source.get(SELF_REPORTED, [])


def _run_ids(pairs: Iterable[Pair]) -> list[int]:
    return sorted({p.run_id for p in pairs})


def _n_seeds(pairs: Iterable[Pair]) -> int:
    return len({p.seed for p in pairs})


def _by_hardware(group: MetricGroup) -> tuple[list[dict[str, Any]], list[stats.EffectEstimate]]:
    entries, estimates = [], []
    for hardware, pairs in sorted(_split(group.pairs, "hardware").items()):
        estimate = _effect(pairs, group.info)
        estimates.append(estimate)
        entries.append(
            {
                "hardware": hardware,
                "sources": sorted({p.source for p in pairs}),
                "n_runs": len(pairs),
                "effect": estimate.to_dict(),
            }
        )
    return entries, estimates


def _by_reproduction(group: MetricGroup) -> tuple[list[dict[str, Any]], list[stats.EffectEstimate]]:
    entries, estimates = [], []
    for reproduction_id, pairs in sorted(_split(group.pairs, "reproduction_id").items()):
        estimate = _effect(pairs, group.info)
        estimates.append(estimate)
        entries.append(
            {
                "reproduction": reproduction_id,
                "source": pairs[0].source,
                "requested_by": pairs[0].requested_by_id,
                "hardware": sorted({p.hardware for p in pairs}),
                "n_runs": len(pairs),
                "effect": estimate.to_dict(),
            }
        )
    return entries, estimates


def _metric_entry(group: MetricGroup) -> dict[str, Any]:
    """One metric's effects in one experiment, as JSON."""
    rung, deciding = _deciding_pairs(group.pairs)
    estimate = _effect(deciding, group.info)
    by_source = {
        source: _effect(pairs, group.info).to_dict()
        for source, pairs in _split(group.pairs, "source").items()
    }
    hardware_entries, hardware_estimates = _by_hardware(group)
    reproduction_entries, reproduction_estimates = _by_reproduction(group)
    return {
        "experiment": group.experiment_id,
        "plugin": group.key.plugin,
        "metric": group.key.metric,
        "metric_version": group.key.version,
        "axis": group.info.axis,
        "higher_is_better": group.info.higher_is_better,
        "unit": group.info.unit,
        "scale": group.info.scale,
        "time_to_event": group.info.time_to_event,
        "declared": group.info.declared,
        "evidence": rung,
        "n_runs": len(deciding),
        "n_seeds": _n_seeds(deciding),
        "run_ids": _run_ids(deciding),
        "effect": estimate.to_dict(),
        "by_source": {REGISTRY: by_source.get(REGISTRY), SELF_REPORTED: by_source.get(SELF_REPORTED)},
        "by_hardware": hardware_entries,
        "by_reproduction": reproduction_entries,
        "heterogeneity": {
            "hardware": stats.heterogeneity(hardware_estimates).to_dict(),
            "reproduction": stats.heterogeneity(reproduction_estimates).to_dict(),
        },
    }


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


def _claim_groups(claim: Claim, groups: list[MetricGroup]) -> list[MetricGroup]:
    """Per experiment, the group a claim is decided on: its metric at the newest metric version
    with data in that experiment (older versions are reported under ``metrics``, never pooled)."""
    newest: dict[int, MetricGroup] = {}
    for group in groups:
        if group.key.metric != claim.metric:
            continue
        current = newest.get(group.experiment_id)
        if current is None or group.key.version > current.key.version:
            newest[group.experiment_id] = group
    return [newest[e] for e in sorted(newest)]


def _threshold(claim: Claim) -> float:
    value = claim.margin if claim.direction == Claim.Direction.NON_INFERIOR else claim.min_relative_effect
    return float(value or 0.0)


def _verdict(claim: Claim, estimate: stats.EffectEstimate, info: MetricInfo) -> tuple[str, str | None]:
    """The claim's verdict from an estimate (at whatever confidence it was computed)."""
    try:
        return stats.claim_verdict(
            estimate,
            direction=claim.direction,
            threshold=_threshold(claim),
            threshold_unit=getattr(claim, "threshold_unit", "relative") or "relative",
            higher_is_better=info.higher_is_better,
            min_seeds=min_seeds(),
        )
    except ValueError as exc:  # a malformed claim (e.g. written around the services)
        return INCONCLUSIVE, f"claim cannot be checked: {exc}"


def _mde(claim: Claim, estimate: stats.EffectEstimate, info: MetricInfo, confidence: float) -> str | None:
    try:
        return stats.mde_warning(
            estimate,
            _threshold(claim),
            threshold_unit=getattr(claim, "threshold_unit", "relative") or "relative",
            direction=claim.direction,
            higher_is_better=info.higher_is_better,
            alpha=1.0 - confidence,
        )
    except ValueError:  # a claim the verdict already reports as unusable
        return None


def _combined_verdict(verdicts: list[str]) -> tuple[str, bool]:
    """One verdict from the experiments' verdicts, and whether they disagree."""
    decided = set(verdicts) & {CONFIRMED, REFUTED}
    if decided == {CONFIRMED, REFUTED}:
        return INCONCLUSIVE, True
    if decided:
        return decided.pop(), False
    return INCONCLUSIVE, False


def _claim_base(claim: Claim) -> dict[str, Any]:
    return {
        "claim": claim.pk,
        "metric": claim.metric,
        "direction": claim.direction,
        "min_relative_effect": claim.min_relative_effect,
        "margin": claim.margin,
        "threshold_unit": getattr(claim, "threshold_unit", "relative") or "relative",
        "statement": claim.statement,
        "version": claim.version,
    }


def _claim_without_data(claim: Claim) -> dict[str, Any]:
    return {
        **_claim_base(claim),
        "plugin": None,
        "metric_version": None,
        "experiment": None,
        "verdict": INCONCLUSIVE,
        "decided": False,
        "has_data": False,
        "evidence": "",
        "effect": None,
        "p_value": None,
        "p_holm": None,
        "mde_warning": None,
        "experiments": [],
        "experiments_disagree": False,
        "by_source": {REGISTRY: None, SELF_REPORTED: None},
        "reproductions": [],
        "reproductions_disagree": False,
        "run_ids": [],
        "rungs": [],
        "warnings": ["no succeeded run measured this metric yet"],
    }


def _experiment_verdict(
    claim: Claim, group: MetricGroup, confidence: float, author_ids: set[int]
) -> dict[str, Any]:
    rung, deciding = _deciding_pairs(group.pairs)
    estimate = _effect(deciding, group.info, confidence=confidence)
    verdict, reason = _verdict(claim, estimate, group.info)
    by_source = _split(group.pairs, "source")
    sources = {}
    for source in (REGISTRY, SELF_REPORTED):
        pairs = by_source.get(source, [])
        if pairs:
            own = _effect(pairs, group.info, confidence=confidence)
            sources[source] = {
                "verdict": _verdict(claim, own, group.info)[0],
                "n_runs": len(pairs),
                "run_ids": _run_ids(pairs),
                "effect": own.to_dict(),
            }
        else:
            sources[source] = None
    reproductions = []
    for reproduction_id, own in sorted(_split(deciding, "reproduction_id").items()):
        own_verdict = _verdict(claim, _effect(own, group.info, confidence=confidence), group.info)[0]
        reproductions.append(
            {"reproduction": reproduction_id, "source": own[0].source, "n_runs": len(own), "verdict": own_verdict}
        )
    decided = {r["verdict"] for r in reproductions}
    warnings = [*estimate.warnings, *([reason] if reason else [])]
    return {
        "experiment": group.experiment_id,
        "plugin": group.key.plugin,
        "metric_version": group.key.version,
        "scale": group.info.scale,
        "verdict": verdict,
        "reason": reason,
        "evidence": rung,
        "n_seeds": estimate.n,
        "effect": estimate.to_dict(),
        "p_value": estimate.p_value,
        "mde_warning": _mde(claim, estimate, group.info, confidence),
        "by_source": sources,
        "reproductions": reproductions,
        "reproductions_disagree": {CONFIRMED, REFUTED} <= decided,
        "run_ids": _run_ids(deciding),
        "rungs": _rungs(group.pairs, author_ids),
        "warnings": warnings,
    }


def _claim_entry(
    claim: Claim, claim_groups: list[MetricGroup], confidence: float, author_ids: set[int], groups: list[MetricGroup]
) -> dict[str, Any]:
    if not claim_groups:
        return _claim_without_data(claim)
    per_experiment = [_experiment_verdict(claim, g, confidence, author_ids) for g in claim_groups]
    verdict, disagree = _combined_verdict([e["verdict"] for e in per_experiment])
    # The experiment shown for the claim: one that decided it as the claim did, else the one with
    # the most seeds.
    agreeing = [e for e in per_experiment if e["verdict"] == verdict] if verdict != INCONCLUSIVE else []
    shown = max(agreeing or per_experiment, key=lambda e: (e["n_seeds"], -e["experiment"]))
    warnings = list(shown["warnings"])
    if disagree:
        warnings.append("experiments disagree: confirmed in one, refuted in another")
    older = sorted(
        {g.key.version for g in groups if g.key.metric == claim.metric} - {g.key.version for g in claim_groups}
    )
    if older:
        warnings.append(f"decided on the newest metric version with data; versions {older} are reported apart")
    return {
        **_claim_base(claim),
        "plugin": shown["plugin"],
        "metric_version": shown["metric_version"],
        "experiment": shown["experiment"],
        "verdict": verdict,
        "decided": verdict != INCONCLUSIVE,
        "has_data": True,
        "evidence": shown["evidence"],
        "effect": shown["effect"],
        "p_value": shown["p_value"],
        "p_holm": None,
        "mde_warning": shown["mde_warning"],
        "experiments": per_experiment,
        "experiments_disagree": disagree,
        "by_source": shown["by_source"],
        "reproductions": shown["reproductions"],
        "reproductions_disagree": any(e["reproductions_disagree"] for e in per_experiment),
        "run_ids": sorted({r for e in per_experiment for r in e["run_ids"]}),
        "rungs": sorted(
            {r for e in per_experiment for r in e["rungs"]}, key=RUNG_ORDER.index
        ),
        "warnings": warnings,
    }


def _claim_entries(claims: list[Claim], groups: list[MetricGroup], author_ids: set[int]) -> tuple[list, float, int]:
    """Every current claim's verdict. All (claim, experiment) tests share a Bonferroni-corrected
    confidence (simultaneous 95%); the shown p-values are Holm-adjusted across the claims."""
    per_claim = [_claim_groups(claim, groups) for claim in claims]
    n_tests = max(1, sum(len(g) for g in per_claim))
    confidence = stats.corrected_confidence(CONFIDENCE, n_tests)
    entries = [
        _claim_entry(claim, own, confidence, author_ids, groups) for claim, own in zip(claims, per_claim, strict=True)
    ]
    for entry, adjusted in zip(entries, stats.holm_bonferroni([e["p_value"] for e in entries]), strict=True):
        entry["p_holm"] = adjusted
    return entries, confidence, n_tests


# ---------------------------------------------------------------- 5. scores, status


def _newest_versions(groups: list[MetricGroup]) -> list[MetricGroup]:
    newest: dict[tuple[str, str], MetricGroup] = {}
    for group in groups:
        key = (group.key.plugin, group.key.metric)
        if key not in newest or group.key.version > newest[key].key.version:
            newest[key] = group
    return list(newest.values())


def _aligned(column: tuple, index: dict[int, int], seeds: list[int], missing: Any) -> list:
    """``column`` (one entry per seed of one metric) laid out on ``seeds`` (all the axis's seeds)."""
    return [column[index[seed]] if seed in index else missing for seed in seeds]


def _axis_scores(groups: list[MetricGroup]) -> dict[str, dict[str, Any] | None]:
    """One experiment's safety and capability scores from each metric's newest version, on the
    deciding rung, aligned by seed (diagnostics excluded)."""
    scores: dict[str, dict[str, Any] | None] = {}
    for axis in AXES:
        on_axis = [g for g in _newest_versions(groups) if g.info.axis == axis and g.info.declared]
        if not on_axis:
            scores[axis] = None
            continue
        per_metric = {g.key.metric: _per_seed(_deciding_pairs(g.pairs)[1]) for g in on_axis}
        seeds = sorted({s for values in per_metric.values() for s in values.seeds})
        metrics = []
        for group in on_axis:
            values = per_metric[group.key.metric]
            index = {seed: i for i, seed in enumerate(values.seeds)}
            metrics.append(
                stats.AxisMetric(
                    name=group.key.metric,
                    scale=group.info.scale,
                    higher_is_better=group.info.higher_is_better,
                    baseline=_aligned(values.baseline, index, seeds, None),
                    intervention=_aligned(values.intervention, index, seeds, None),
                    baseline_censored=_aligned(values.baseline_censored, index, seeds, False),
                    intervention_censored=_aligned(values.intervention_censored, index, seeds, False),
                )
            )
        score = stats.axis_score(metrics, confidence=CONFIDENCE, min_seeds=min_seeds())
        scores[axis] = score.to_dict() if score else None
    return scores


def _experiment_summaries(
    groups: list[MetricGroup], experiments: dict[int, Experiment]
) -> list[dict[str, Any]]:
    by_experiment = _split_groups(groups)
    out = []
    for experiment_id, own in sorted(by_experiment.items()):
        experiment = experiments.get(experiment_id)
        deciding = [p for g in own for p in _deciding_pairs(g.pairs)[1]]
        out.append(
            {
                "experiment": experiment_id,
                "plugin": experiment.plugin if experiment else own[0].key.plugin,
                "params": experiment.params if experiment else {},
                "n_runs": len({p.run_id for g in own for p in g.pairs}),
                "n_seeds": _n_seeds(deciding),
                "axis_scores": _axis_scores(own),
            }
        )
    return out


def _split_groups(groups: list[MetricGroup]) -> dict[int, list[MetricGroup]]:
    out: dict[int, list[MetricGroup]] = defaultdict(list)
    for group in groups:
        out[group.experiment_id].append(group)
    return dict(out)


def _summary_scores(summaries: list[dict[str, Any]]) -> tuple[dict[str, Any], int | None]:
    """The finding's scores: the experiment with the most seeds (the earliest on a tie)."""
    scored = [s for s in summaries if any(s["axis_scores"].values())]
    if not scored:
        return {axis: None for axis in AXES}, None
    best = max(scored, key=lambda s: (s["n_seeds"], -s["experiment"]))
    scores = {
        axis: ({**score, "experiment": best["experiment"], "method": SUMMARY_METHOD} if score else None)
        for axis, score in best["axis_scores"].items()
    }
    return scores, best["experiment"]


def finding_status(claims: list[dict[str, Any]], has_runs: bool) -> str:
    """The finding's status from its claims' verdicts (see README, "Finding status")."""
    if not has_runs:
        return Finding.Status.UNREPRODUCED.value
    verdicts = [c["verdict"] for c in claims]
    disagree = any(c.get("experiments_disagree") or c.get("reproductions_disagree") for c in claims)
    confirmed, refuted = CONFIRMED in verdicts, REFUTED in verdicts
    if disagree or (confirmed and refuted):
        return Finding.Status.CONTESTED.value
    if confirmed and all(v == CONFIRMED for v in verdicts):
        return Finding.Status.REPRODUCED.value
    if confirmed:
        return Finding.Status.PARTIALLY_REPRODUCED.value
    if refuted:
        return Finding.Status.FAILED_TO_REPRODUCE.value
    return Finding.Status.UNDECIDED.value


# ---------------------------------------------------------------- 6. store and announce


def _store_verdicts(finding: Finding, claims: list[Claim], entries: list[dict[str, Any]]) -> None:
    existing = {v.claim_id: v for v in ClaimVerdict.objects.filter(claim__in=claims)}
    for claim, entry in zip(claims, entries, strict=True):
        row = existing.get(claim.pk)
        old = row.verdict if row else None
        new = entry["verdict"]
        if row is None:
            row = ClaimVerdict(claim=claim)
        if row.pk and (row.verdict, row.evidence, row.run_ids) == (new, entry["evidence"], entry["run_ids"]):
            continue
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
                    "experiment": entry["experiment"],
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


def effects_data(finding: Finding, claims: list[Claim]) -> dict[str, Any]:
    """Everything computed for one finding, JSON-safe (no writes)."""
    token = _MEMO.set({})
    try:
        return _effects_data(finding, claims)
    finally:
        _MEMO.reset(token)


def _effects_data(finding: Finding, claims: list[Claim]) -> dict[str, Any]:
    # accepted authors only: an invited (or declined) user's reproductions stay independent
    author_ids = set(finding.authors.values_list("pk", flat=True))
    groups = _metric_groups(finding.pk)
    experiments = {e.pk: e for e in Experiment.objects.filter(finding=finding)}
    claim_entries, claims_confidence, n_tests = _claim_entries(claims, groups, author_ids)
    summaries = _experiment_summaries(groups, experiments)
    scores, summary_experiment = _summary_scores(summaries)
    all_pairs = [p for g in groups for p in g.pairs]
    retracted = sorted(pk for pk, e in experiments.items() if e.retracted_at is not None)
    return {
        "finding": finding.pk,
        "status": finding_status(claim_entries, bool(all_pairs)),
        "confidence": CONFIDENCE,
        "claims_confidence": claims_confidence,
        "claims_tests": n_tests,
        "min_seeds": min_seeds(),
        "n_runs": len({p.run_id for p in all_pairs}),
        "run_ids": _run_ids(all_pairs),
        "evidence_rungs": _rungs(all_pairs, author_ids),
        "experiments": summaries,
        "retracted_experiments": retracted,
        # what the effects were computed with (the stale scan recomputes when an installed version changes)
        "plugin_versions": {
            e.plugin: getattr(_plugin_class(e.plugin), "version", None) for e in experiments.values()
        },
        "summary_experiment": summary_experiment,
        "metrics": [_metric_entry(group) for group in groups],
        "claims": claim_entries,
        "axis_scores": scores,
        "lean": stats.lean_flag(scores["safety"], scores["capability"]),
    }


def _lock_for_store(finding_id: int) -> Finding | None:
    """The store's locks, in the writers' order: the finding's effects row, then the finding (no
    key update: inserts that reference the finding are not blocked)."""
    FindingEffects.objects.bulk_create([FindingEffects(finding_id=finding_id)], ignore_conflicts=True)
    FindingEffects.objects.select_for_update().filter(finding_id=finding_id).only("pk").first()
    return Finding.objects.select_for_update(no_key=True).filter(pk=finding_id).first()


@transaction.atomic
def finding_effects_recompute(*, finding_id: int) -> dict:
    """Recompute, store and return a finding's effects (the recompute task calls this).

    The computation holds no row lock (writers of the finding never wait for it); recomputes of
    one finding are serialised by a transaction-level advisory lock, so they run one after the
    other and announce each verdict change once. The store then locks the effects row and the
    finding (the writers' order, see ``effects_recompute_request``). A change that commits while
    the computation runs requested another recompute, which sees it (``effects_recompute_run``).
    """
    _recompute_lock(finding_id)
    finding = Finding.objects.filter(pk=finding_id).first()
    if finding is None:
        return {}
    claims = list(finding.claims.filter(is_current=True).order_by("id"))
    data = effects_data(finding, claims)
    locked = _lock_for_store(finding_id)
    if locked is None:  # deleted meanwhile
        return {}
    # a claim deleted while we computed has no verdict row to write
    present = set(Claim.objects.filter(pk__in=[c.pk for c in claims]).values_list("pk", flat=True))
    kept = [(c, e) for c, e in zip(claims, data["claims"], strict=True) if c.pk in present]
    _store_verdicts(locked, [c for c, _ in kept], [e for _, e in kept])
    _store_status(locked, data["status"])
    summary, detail = effects_split(data)
    FindingEffects.objects.filter(finding_id=finding_id).update(
        data=summary, detail=detail, computed_at=_database_clock(FindingEffects.objects.db)
    )
    return data


def _database_clock(alias: str) -> Func | Now:
    """The database's clock, one for every host: ``computed_at`` feeds the landscape's effects
    version (the sum of the newest stamps), which a maintenance host whose clock lagged would
    not move, leaving cached aggregates stale. On PostgreSQL the time of the statement itself
    (``clock_timestamp()``, not the transaction's start)."""
    if connections[alias].vendor == "postgresql":
        return Func(template="clock_timestamp()", output_field=DateTimeField())
    return Now()


# ---------------------------------------------------------------- summary and detail

#: Keys whose values grow with the number of runs or reproductions: stored apart from the summary
#: (``FindingEffects.detail``) and served on request only (``?detail=runs``).
DETAIL_KEYS = ("run_ids", "by_reproduction", "reproductions")


def effects_split(data: Any, path: tuple = ()) -> tuple[Any, list[list]]:
    """The summary (``data`` without the ``DETAIL_KEYS``, each replaced by its count: ``n_runs``
    for run ids where the entry has no count yet, ``n_reproductions``) and the detail as
    ``[path, value]`` pairs, so that ``effects_merge`` restores ``data`` exactly."""
    detail: list[list] = []
    if isinstance(data, dict):
        summary = {}
        for key, value in data.items():
            if key in DETAIL_KEYS and isinstance(value, list):
                detail.append([[*path, key], value])
                continue
            summary[key], inner = effects_split(value, (*path, key))
            detail.extend(inner)
        for key, value in data.items():
            if key not in DETAIL_KEYS or not isinstance(value, list):
                continue
            count = "n_runs" if key == "run_ids" else "n_reproductions"
            summary.setdefault(count, len(value))
        return summary, detail
    if isinstance(data, list):
        out = []
        for index, value in enumerate(data):
            item, inner = effects_split(value, (*path, index))
            out.append(item)
            detail.extend(inner)
        return out, detail
    return data, detail


def effects_merge(summary: dict[str, Any], detail: list[list]) -> dict[str, Any]:
    """The summary with its detail put back (a copy; counts added by the split stay)."""
    merged = json.loads(json.dumps(summary))
    for path, value in detail or []:
        target: Any = merged
        try:
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):  # a summary from another computation: skip
            continue
    return merged


#: ``pg_advisory_xact_lock(RECOMPUTE_LOCK_CLASS, finding_id)`` serialises one finding's recomputes.
RECOMPUTE_LOCK_CLASS = 0x0EFF


def _recompute_lock(finding_id: int) -> None:
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [RECOMPUTE_LOCK_CLASS, int(finding_id) & 0x7FFFFFFF])


# ---------------------------------------------------------------- recompute requests (reads never write)

#: The Celery task that recomputes one finding's effects (worker/tasks.py), on this queue.
RECOMPUTE_TASK = "worker.effects_recompute"
RECOMPUTE_QUEUE = "maintenance"
#: A recompute still pending this long after its request is enqueued again by the sweep (the
#: broker may have lost the message; a duplicate is harmless: recomputing is idempotent).
RECOMPUTE_RESEND_AFTER = timedelta(minutes=5)
#: A recompute that failed (and exhausted its retries) is tried again this often by the sweep.
RECOMPUTE_FAILED_RESEND_AFTER = timedelta(hours=1)
#: At most this many requests are re-sent per sweep (oldest first).
SWEEP_LIMIT = 200
MAX_ERROR_CHARS = 10_000


#: Bounds of EFFECTS_RECOMPUTE_BUSY_DELAY_S: well under RECOMPUTE_RESEND_AFTER (the sweep would
#: re-send a request still waiting) and the broker's visibility timeout.
BUSY_DELAY_MAX_S = 60.0


def busy_delay_s() -> float:
    """EFFECTS_RECOMPUTE_BUSY_DELAY_S within [0, BUSY_DELAY_MAX_S] (not a number: 0)."""
    try:
        delay = float(settings.EFFECTS_RECOMPUTE_BUSY_DELAY_S)
    except (TypeError, ValueError):
        return 0.0
    return min(max(delay, 0.0), BUSY_DELAY_MAX_S) if math.isfinite(delay) else 0.0


def effects_recompute_enqueue(finding_id: int, *, countdown: float = 0.0) -> None:
    """Send one recompute message (to run ``countdown`` seconds from now). A broker failure is
    logged; the sweep sends it again later."""
    try:
        options = {"countdown": countdown} if countdown > 0 else {}
        celery_app.send_task(RECOMPUTE_TASK, args=[finding_id], queue=RECOMPUTE_QUEUE, **options)
    except Exception:
        logger.exception("could not enqueue the effects recompute of finding %s; the sweep will retry", finding_id)


def effects_recompute_request(*, finding_id: int) -> None:
    """Ask for a finding's effects to be recomputed; call it inside the transaction of the change
    that can move them (a run finishing, a claim or experiment added or changed, ...). A change
    that also locks the finding or its claims calls it *before* those locks (the store's order:
    this row, then the finding); a change that only inserts rows (a run's results) calls it as
    late as it can, so that the row lock below is held for the commit only.

    One ``UPDATE`` of the finding's ``FindingEffects`` row (created if needed): ``requested_seq``
    goes up by one and ``pending`` is set. The row stays locked until the caller commits, but no
    recompute holds it while computing (it locks it only to store its result), so a writer never
    waits for a recompute, only for another writer's commit. Requests coalesce: only the one that
    finds the row not yet pending enqueues the task, after commit (nothing is sent for a change
    that rolls back); a recompute that started before this change committed sees the sequence
    moved when it stores, leaves ``pending`` set and enqueues itself again,
    EFFECTS_RECOMPUTE_BUSY_DELAY_S later.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("effects_recompute_request must run inside the transaction of the change")
    was_pending = _request_bump(finding_id)
    if was_pending is None:
        FindingEffects.objects.bulk_create([FindingEffects(finding_id=finding_id)], ignore_conflicts=True)
        was_pending = _request_bump(finding_id)
    if was_pending:
        return
    FindingEffects.objects.filter(finding_id=finding_id).update(pending=True, requested_at=timezone.now())
    transaction.on_commit(lambda: effects_recompute_enqueue(finding_id))


def _request_bump(finding_id: int) -> bool | None:
    """Bump the request sequence; whether the row was pending before (None: no row yet)."""
    table = FindingEffects._meta.db_table
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET requested_seq = requested_seq + 1 WHERE finding_id = %s RETURNING pending",
            [finding_id],
        )
        row = cursor.fetchone()
    return None if row is None else bool(row[0])


def effects_recompute_run(*, finding_id: int) -> dict:
    """The recompute task's body: one transaction that recomputes and stores the effects, and
    clears ``pending`` unless another request arrived meanwhile.

    The computation holds no lock that writers take (``finding_effects_recompute``); the request
    sequence read before it says whether a change committed while it ran: then ``pending`` stays
    set and the task is enqueued again after commit, to run ``EFFECTS_RECOMPUTE_BUSY_DELAY_S``
    later (a finding receiving a stream of changes is recomputed about once per interval plus a
    recompute's time, not back to back, leaving the CPUs to the writes), and the next recompute
    sees that change. A crash anywhere rolls the transaction back and leaves ``pending`` set, so
    the sweep sends the request again. A duplicate message (the sweep re-sent a request already done) finds nothing
    pending and returns. A failure is logged with the finding, stored in ``FindingEffects.error``
    with the event ``finding.effects_failed``, and re-raised (the task retries); a success clears
    ``error``.
    """
    try:
        with transaction.atomic():
            _recompute_lock(finding_id)
            row = FindingEffects.objects.filter(finding_id=finding_id).values("pending", "requested_seq").first()
            if row is None or not row["pending"]:
                return {}
            data = finding_effects_recompute(finding_id=finding_id)
            # the store locked the row (or, for a deleted finding, nothing is left to clear)
            now_seq = (
                FindingEffects.objects.select_for_update().filter(finding_id=finding_id)
                .values_list("requested_seq", flat=True).first()
            )
            done = now_seq is None or now_seq == row["requested_seq"]
            if done:
                FindingEffects.objects.filter(finding_id=finding_id).update(pending=False, error="")
            else:  # changes arrived meanwhile: more may follow, so the next one waits a little
                # requested_at moves on: the sweep sees a request sent just now, not one lost since
                # the finding became busy (which would start a second chain of recomputes)
                FindingEffects.objects.filter(finding_id=finding_id).update(error="", requested_at=timezone.now())
                delay = busy_delay_s()
                transaction.on_commit(lambda: effects_recompute_enqueue(finding_id, countdown=delay))
    except Exception as exc:
        logger.exception("effects recompute failed for finding %s", finding_id)
        # Readers see the kind of failure; the details (which may name hosts or SQL) stay in the log.
        message = f"{type(exc).__name__} while recomputing the effects (details in the worker log)"
        with transaction.atomic():
            FindingEffects.objects.filter(finding_id=finding_id).update(error=message[:MAX_ERROR_CHARS])
            event_emit(
                type="finding.effects_failed",
                finding_id=finding_id,
                payload={"finding": finding_id, "error": message},
            )
        raise
    return data


def effects_recompute_sweep(*, now: datetime | None = None, limit: int = SWEEP_LIMIT) -> list[int]:
    """Enqueue again the recomputes still pending ``RECOMPUTE_RESEND_AFTER`` after their request
    (a lost message, a crashed worker), oldest first and at most ``limit`` per sweep; one that
    failed (``error`` set) only every ``RECOMPUTE_FAILED_RESEND_AFTER``. Returns their findings.
    The request time moves on, so each is re-sent at most once per interval."""
    now = now or timezone.now()
    due = Q(error="", requested_at__lt=now - RECOMPUTE_RESEND_AFTER) | (
        ~Q(error="") & Q(requested_at__lt=now - RECOMPUTE_FAILED_RESEND_AFTER)
    )
    resent = []
    stale = FindingEffects.objects.filter(due, pending=True).order_by("requested_at")
    for finding_id in list(stale.values_list("finding_id", flat=True)[:limit]):
        if FindingEffects.objects.filter(due, finding_id=finding_id, pending=True).update(requested_at=now):
            effects_recompute_enqueue(finding_id)
            resent.append(finding_id)
    return resent
