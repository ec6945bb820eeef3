"""Reading effects: one finding, the landscape across findings, a theory's lineage roll-up.

Visibility always goes through ``registry.findings.selectors.finding_list``. Per-finding numbers
come from the ``FindingEffects`` cache (never computed here: reads never write); the cross-finding
statistics are computed here from those numbers with :mod:`registry.effects.stats`.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import fields as dataclass_fields
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db import connections
from django.db.models import Count, Exists, F, Max, OuterRef, Q, QuerySet, Sum
from django.db.models.fields.json import KeyTransform
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


def _effects_for(findings: Iterable[Finding], *, detail: bool = False) -> dict[int, dict[str, Any]]:
    """Effects of these findings by id, exactly as cached (reads never write: recomputes are
    requested by the writes that can move them and run in the worker).

    Each carries ``pending`` (a recompute is requested and not yet done: the numbers may be out
    of date), ``computed_at`` (None: never computed) and ``error`` (why the last recompute failed,
    or None). ``detail``: with the per-run detail put back (``effects_merge``), read in the same
    query as the summary, so both come from one computation.
    """
    findings = list(findings)
    columns = ["finding_id", "data", "computed_at", "pending", "error", *(["detail"] if detail else [])]
    rows = {
        row.finding_id: row
        for row in FindingEffects.objects.filter(finding__in=[f.pk for f in findings]).only(*columns)
    }
    effects = {}
    for finding in findings:
        row = rows.get(finding.pk)
        computed = bool(row and row.data)
        data = row.data if computed else _no_effects(finding)
        if detail and computed:
            from registry.effects.services import effects_merge

            data = effects_merge(data, row.detail or [])
        effects[finding.pk] = {
            **data,
            "pending": bool(row and row.pending),
            "computed_at": row.computed_at.isoformat() if computed else None,
            "error": (row.error or None) if row else None,
        }
    return effects


def finding_effects_get(*, finding: Finding, user: Any, detail: bool = False) -> dict:
    """Effects of one finding the caller may see (the view resolved it through finding_list);
    ``detail``: with the run ids and per-reproduction entries (``?detail=runs``)."""
    return _effects_for([finding], detail=detail)[finding.pk]


# ---------------------------------------------------------------- points and counts


def _point(finding: Finding, data: dict[str, Any]) -> dict[str, Any]:
    return _point_of(
        {"id": finding.pk, "title": finding.title, "kind": finding.kind, "status": finding.status},
        [t.name for t in finding.tags.all()],
        [e.plugin for e in finding.experiments.all() if e.retracted_at is None],
        data,
    )


def _point_of(row: dict[str, Any], tags: Iterable[str], plugins: Iterable[str], data: dict[str, Any]) -> dict[str, Any]:
    """A landscape point from a finding's id, title, kind and status, its tag names and the
    plugins of its live experiments, and its effects."""
    scores = data.get("axis_scores") or {}
    return {
        "finding": row["id"],
        "title": row["title"],
        "kind": row["kind"],
        "status": row["status"],
        "tags": sorted(tags),
        "plugins": sorted(set(plugins)),
        "safety": scores.get("safety"),
        "capability": scores.get("capability"),
        "lean": data.get("lean", "neither"),
        "evidence_rungs": data.get("evidence_rungs", []),
        "n_runs": data.get("n_runs", 0),
    }


def _lean_counts(points: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(p["lean"] for p in points)
    return {lean: counts.get(lean, 0) for lean in LEANS}


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
    above, below = progress.get("n_above", 0), progress.get("n_below", 0)
    return (
        f"{text} Across {progress['n']} findings with both scores, each log unit of capability gain comes "
        f"with {_fmt_interval(slope, progress.get('slope_ci_low'), progress.get('slope_ci_high'))} log units "
        f"of safety; {above} finding(s) buy safety beyond that trend (differential progress) and "
        f"{below} fall below it."
    )


# ---------------------------------------------------------------- capabilities correlation


def _arm_observations(
    visible: QuerySet[Finding], plugin: str
) -> tuple[dict[tuple[int, str], dict[str, tuple[int, float | None]]], bool]:
    """{(run, arm): {metric: (version, value)}} for the plugin's most recent succeeded registry
    runs (at most ``MAX_CORRELATION_RUNS``; retracted experiments excluded) in the visible
    findings, and whether older runs were left out."""
    run_ids = list(
        Run.objects.filter(
            reproduction__experiment__finding_id__in=visible.order_by().values("pk"),
            reproduction__experiment__plugin=plugin,
            reproduction__experiment__retracted_at__isnull=True,
            reproduction__source=Reproduction.Source.REGISTRY,
            state=Run.State.SUCCEEDED,
        )
        .order_by("-id")
        .values_list("id", flat=True)[: MAX_CORRELATION_RUNS + 1]
    )
    truncated = len(run_ids) > MAX_CORRELATION_RUNS
    rows = Measurement.objects.filter(run_id__in=run_ids[:MAX_CORRELATION_RUNS]).values_list(
        "run_id", "arm", "metric", "metric_version", "value", "censored"
    )
    observations: dict[tuple[int, str], dict[str, tuple[int, float | None]]] = defaultdict(dict)
    for run_id, arm, metric, version, value, censored in rows:
        # A censored time is a bound, not a number: it never enters the PCA.
        observations[(run_id, arm)][metric] = (version, None if censored else value)
    return observations, truncated


def _plugin_correlations(visible: QuerySet[Finding], plugin: str) -> dict[str, Any]:
    """Per safety metric, the capabilities correlation (Ren et al. 2024) across the plugin's
    registry runs in every finding the reader can see that uses it.

    Observations are (run, arm): each arm of each run is one trained model. Every metric is
    oriented so that higher is better before the PCA; the interval resamples runs (the two arms of
    a run share a seed). Only values under the installed plugin's metric versions count. Over
    ``MAX_CORRELATION_RUNS`` runs, the most recent ones are used (``runs_left_out`` says so).
    """
    try:
        cls = get_plugin(plugin)
    except (PluginNotFound, PluginUnavailable) as exc:
        return {"plugin": plugin, "metrics": [], "warning": f"plugin unavailable: {exc}"}
    safety = [m for m in cls.metrics if m.axis.value == "safety"]
    capability = [m for m in cls.metrics if m.axis.value == "capability"]
    if not capability:
        return {"plugin": plugin, "metrics": [], "warning": "the plugin declares no capability metric"}
    observations, truncated = _arm_observations(visible, plugin)
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
    return {
        "plugin": plugin,
        "metrics": entries,
        "warning": f"only the {MAX_CORRELATION_RUNS} most recent runs are used" if truncated else None,
        "runs_left_out": truncated,
    }


# ---------------------------------------------------------------- lineage roll-up


def _descendant_depths_of(roots: Iterable[int], visible: QuerySet[Finding]) -> dict[int, dict[int, int]]:
    """For each root, every visible transitive descendant with its shortest distance (1 = builds
    directly on it). One query per level of the lineage (whatever the number of roots); a walk
    never passes through a finding the reader may not see."""
    roots = list(dict.fromkeys(roots))
    depths: dict[int, dict[int, int]] = {root: {} for root in roots}
    frontier: dict[int, set[int]] = {root: {root} for root in roots}  # node -> roots reaching it
    visible_ids = visible.order_by().values("pk")
    edges = Finding.builds_on.through.objects
    depth = 0
    while frontier:
        depth += 1
        following: dict[int, set[int]] = defaultdict(set)
        level = edges.filter(to_finding_id__in=list(frontier), from_finding_id__in=visible_ids)
        for parent, child in level.values_list("to_finding_id", "from_finding_id"):
            for root in frontier[parent]:
                if child != root and child not in depths[root]:
                    depths[root][child] = depth
                    following[child].add(root)
        frontier = following
    return depths


def _rollup(finding: Finding, visible: QuerySet[Finding], depths: dict[int, int]) -> dict[str, Any]:
    descendants = list(visible.filter(pk__in=list(depths)).prefetch_related("experiments"))
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
        "counts": _rollup_counts([(row["status"], row["lean"], row["depth"]) for row in rows]),
    }


def _rollup_counts(rows: list[tuple[str, str, int]]) -> dict[str, Any]:
    """Counts of (status, lean, depth) rows, one per descendant."""
    return {
        "descendants": len(rows),
        "lean": _lean_counts({"lean": lean} for _, lean, _ in rows),
        "status": dict(Counter(status for status, _, _ in rows)),
        "by_depth": {str(d): n for d, n in sorted(Counter(depth for _, _, depth in rows).items())},
    }


def rollup_get(finding: Finding, *, user: Any = None) -> dict[str, Any]:
    """A finding's downstream effects: every visible descendant (direct or transitive, via
    ``built_upon_by``) with its axis scores and lean flag, and counts. ``user=None`` sees what
    an anonymous reader sees."""
    visible = finding_list(user=user)
    return _rollup(finding, visible, _descendant_depths_of([finding.pk], visible)[finding.pk])


def _lineage_counts(theories: list[dict[str, Any]], visible: QuerySet[Finding]) -> list[dict[str, Any]]:
    """Each theory's (``id``, ``title``) roll-up counts, in bulk: one query per lineage level, one
    for the descendants' status and lean (the stored ``FindingEffects.lean``)."""
    depths = _descendant_depths_of([t["id"] for t in theories], visible)
    everyone = {pk for found in depths.values() for pk in found}
    facts = {
        pk: (status, lean or "neither")
        for pk, status, lean in Finding.objects.filter(pk__in=list(everyone)).values_list(
            "pk", "status", "effects_cache__lean"
        )
    } if everyone else {}
    return [
        {
            "finding": theory["id"],
            "title": theory["title"],
            "counts": _rollup_counts(
                [(*facts[pk], depth) for pk, depth in depths[theory["id"]].items() if pk in facts]
            ),
        }
        for theory in theories
    ]


# ---------------------------------------------------------------- the landscape

#: Points per landscape page (``page_size`` up to ``MAX_LANDSCAPE_PAGE_SIZE``): the response is
#: bounded whatever the number of findings; the aggregates always cover every finding.
LANDSCAPE_PAGE_SIZE = 200
MAX_LANDSCAPE_PAGE_SIZE = 500
#: The capabilities correlation uses a plugin's most recent runs, at most this many.
MAX_CORRELATION_RUNS = 250
#: How long a computed capabilities correlation is reused at most (it is recomputed at once when
#: runs, retractions or findings change; this bounds staleness from embargoes expiring).
CORRELATION_CACHE_S = 300


def _landscape_filter(*, tag: str | None, kind: str | None, plugin: str | None) -> Q:
    """What the landscape's filters select among findings, as EXISTS subqueries (no join or DISTINCT)."""
    selected = Q()
    if tag:
        tagged = Finding.tags.through.objects.filter(finding_id=OuterRef("pk"), tag__name=tag.strip().lower())
        selected &= Q(Exists(tagged))
    if kind:
        selected &= Q(kind=kind)
    if plugin:
        live = Experiment.objects.filter(finding_id=OuterRef("pk"), plugin=plugin, retracted_at__isnull=True)
        selected &= Q(Exists(live))
    return selected


def _page_points(findings: QuerySet[Finding], offset: int, limit: int) -> tuple[list[dict], list[dict], bool]:
    """One page of findings (id, title, kind, status) with their points (4 queries whatever the
    page size, plain rows rather than model instances), and whether another page follows."""
    page = list(findings.values("id", "title", "kind", "status")[offset : offset + limit + 1])
    more = len(page) > limit
    page = page[:limit]
    ids = [row["id"] for row in page]
    tags: dict[int, list[str]] = defaultdict(list)
    for finding_id, name in Finding.tags.through.objects.filter(finding_id__in=ids).values_list(
        "finding_id", "tag__name"
    ):
        tags[finding_id].append(name)
    plugins: dict[int, list[str]] = defaultdict(list)
    for finding_id, name in Experiment.objects.filter(finding_id__in=ids, retracted_at__isnull=True).values_list(
        "finding_id", "plugin"
    ):
        plugins[finding_id].append(name)
    stored = {
        row["finding_id"]: row
        for row in FindingEffects.objects.filter(finding_id__in=ids).values(
            "finding_id",
            "lean",
            axis_scores=KeyTransform("axis_scores", "data"),
            evidence_rungs=KeyTransform("evidence_rungs", "data"),
            n_runs=KeyTransform("n_runs", "data"),
        )
    }
    points = []
    for row in page:
        effects = stored.get(row["id"]) or {}
        data = {
            "axis_scores": effects.get("axis_scores") or {},
            "lean": effects.get("lean") or "neither",
            "evidence_rungs": effects.get("evidence_rungs") or [],
            "n_runs": effects.get("n_runs") or 0,
        }
        points.append(_point_of(row, tags[row["id"]], plugins[row["id"]], data))
    return page, points, more


def _effects_summaries_sql(effects: QuerySet[FindingEffects]) -> tuple[dict[str, int], tuple]:
    """From the stored summary columns of every selected finding's effects, in one query (no
    JSON): the tallies (how many have a lean, a score, each lean) and the scored pairs (finding
    ids, safety scores, capability scores, safety standard errors) of those with both scores,
    by finding id."""
    query = effects.order_by("finding_id").values_list(
        "finding_id", "safety_score", "capability_score", "safety_ci_low", "safety_ci_high",
        "safety_n_seeds", "safety_confidence", "lean",
    )
    sql, params = query.query.sql_with_params()
    with connections[query.db].cursor() as cursor:  # plain numbers: straight into an array (NULL -> nan)
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    leans = [row[7] for row in rows]
    tallies = {
        "known": sum(lean is not None for lean in leans),
        **{f"lean_{i}": leans.count(lean) for i, lean in enumerate(LEANS)},
    }
    if not rows:
        return {**tallies, "scored": 0}, ([], np.zeros(0), np.zeros(0), [])
    table = np.array([row[:7] for row in rows], dtype=float)
    safety_all, capability_all = table[:, 1], table[:, 2]
    tallies["scored"] = int(np.count_nonzero(~np.isnan(safety_all) | ~np.isnan(capability_all)))
    table = table[~np.isnan(safety_all) & ~np.isnan(capability_all)]
    ids = table[:, 0].astype(int).tolist()
    safety, capability, low, high, n, confidence = table[:, 1:].T
    confidence = np.where(np.isnan(confidence) | (confidence == 0), 0.95, confidence)
    usable = ~np.isnan(low) & ~np.isnan(high) & (n >= 2)
    quantile = scipy_stats.t.ppf(0.5 + confidence / 2.0, np.where(usable, n - 1, 1))
    se = np.where(usable, (high - low) / (2.0 * quantile), np.nan)
    return tallies, (ids, safety, capability, [None if np.isnan(v) else float(v) for v in se])


def _progress_all(ids: list[int], safety: np.ndarray, capability: np.ndarray, se: list[float | None]) -> dict:
    """Differential progress over every finding with both scores: the trend and how many findings
    lie above and below it (``summary``, JSON-ready), and each finding's residual as arrays by
    finding id (``ids``, ``table``: one row per finding, ``stats.PROGRESS_COLUMNS``) from which a page
    takes its own entries (:func:`_progress_page`)."""
    result, table = stats.differential_progress_table(list(safety), list(capability), se, min_n=MIN_LANDSCAPE_FINDINGS)
    summary = {f.name: getattr(result, f.name) for f in dataclass_fields(result) if f.name != "points"}
    return {
        "summary": stats._json_safe(summary),
        "n_above": int(np.count_nonzero(table[:, 4] > 0.0)),  # NaN (no interval) compares false
        "n_below": int(np.count_nonzero(table[:, 5] < 0.0)),
        "ids": np.array(ids if len(table) else [], dtype=np.int64),
        "table": table,
    }


def _progress_page(progress: dict[str, Any], titles: dict[int, str]) -> dict[str, Any]:
    """Differential progress as the landscape serves it: the trend over every finding, with the
    per-finding residuals of this page's findings only (``titles``, by id)."""
    ids, table = progress["ids"], progress["table"]
    entries = []
    for finding_id in sorted(titles):
        index = int(np.searchsorted(ids, finding_id))
        if index >= len(ids) or ids[index] != finding_id:
            continue
        row = dict(zip(stats.PROGRESS_COLUMNS, table[index].tolist(), strict=True))
        entries.append({
            "finding": finding_id, "title": titles[finding_id], "index": index,
            **{name: stats._json_safe(row[name]) for name in stats.PROGRESS_COLUMNS[:-1]},
            "significant": bool(row["significant"]),
        })
    return {**progress["summary"], "findings": entries, "n_above": progress["n_above"], "n_below": progress["n_below"]}


def _visibility_scope(user: Any) -> str:
    if not getattr(user, "is_authenticated", False):
        return "anonymous"
    return "staff" if user.is_staff else f"user-{user.pk}"


#: The effects version sums this many of the newest ``computed_at`` stamps (see :func:`_data_versions`).
EFFECTS_VERSION_STAMPS = 64


def _data_versions(database: str) -> tuple[tuple, tuple]:
    """Two versions, in one round trip of index scans. The first changes whenever what the cached
    capabilities correlations and plugin list read can change: a measurement stored (runs succeed
    with theirs), an experiment added or retracted, a finding changed (its visibility, tags). The
    second whenever a finding's stored effects change: every recompute stamps ``computed_at``,
    and the exact sum of the ``EFFECTS_VERSION_STAMPS`` newest stamps moves (a row's stamp only
    grows) even when a recompute stamped earlier than another commits after it."""
    effects = FindingEffects._meta.db_table
    epoch = ("julianday(newest.computed_at) * 86400.0" if connections[database].vendor == "sqlite"
             else "extract(epoch FROM newest.computed_at)")  # SQLite has no extract()
    sql = (
        f"SELECT (SELECT max(id) FROM {Measurement._meta.db_table}),"
        f" (SELECT max(id) FROM {Experiment._meta.db_table}),"
        f" (SELECT count(*) FROM {Experiment._meta.db_table} WHERE retracted_at IS NOT NULL),"
        f" (SELECT max(updated_at) FROM {Finding._meta.db_table}),"
        f" (SELECT max(computed_at) FROM {effects}),"
        f" (SELECT sum({epoch}) FROM"
        f" (SELECT computed_at FROM {effects} ORDER BY computed_at DESC LIMIT %s) AS newest)"
    )
    with connections[database].cursor() as cursor:
        cursor.execute(sql, [EFFECTS_VERSION_STAMPS])
        row = tuple(cursor.fetchone())
    return row[:4], row[4:]


def _fingerprint(findings: QuerySet[Finding]) -> tuple:
    """Which findings these are, in a few numbers: their count, the sum and the sum of squares of
    their ids and the largest id (one aggregate query)."""
    ids = findings.order_by().aggregate(
        n=Count("id"), total=Sum("id"), squares=Sum(F("id") * F("id")), top=Max("id")
    )
    return (ids["n"], ids["total"], ids["squares"], ids["top"])


def _cached(key: tuple, compute: Any) -> Any:
    """``compute()``, reused from the cache under ``key`` (which names the database and a data
    version: see :func:`_data_versions`) for at most ``CORRELATION_CACHE_S``."""
    alias, rest = key[1], key[2:]
    name = connections[alias].settings_dict.get("NAME")
    digest = "landscape:" + hashlib.sha256(repr((key[0], name, *rest)).encode()).hexdigest()
    value = cache.get(digest)
    if value is None:
        value = compute()
        cache.set(digest, value, CORRELATION_CACHE_S)
    return value


def _landscape_plugins(findings: QuerySet[Finding], plugin: str | None) -> list[str]:
    """The plugins of the (filtered) findings' live experiments."""
    plugins = sorted(
        set(
            Experiment.objects.filter(Exists(findings.filter(pk=OuterRef("finding_id"))), retracted_at__isnull=True)
            .order_by()
            .values_list("plugin", flat=True)
            .distinct()
        )
    )
    return [name for name in plugins if name == plugin] if plugin else plugins


def _cached_correlations(
    visible: QuerySet[Finding], plugins: list[str], user: Any, version: tuple
) -> list[dict[str, Any]]:
    """Per plugin, :func:`_plugin_correlations` over the visible findings, reused from the cache
    while nothing it reads has changed (its bootstrap costs about a second per thousand runs)."""
    return [
        _cached(
            ("landscape-capcorr", visible.db, _visibility_scope(user), name, _plugin_versions(name), version),
            lambda name=name: _plugin_correlations(visible, name),
        )
        for name in plugins
    ]


def _plugin_versions(plugin: str) -> tuple:
    try:
        return tuple((m.name, m.version) for m in get_plugin(plugin).metrics)
    except (PluginNotFound, PluginUnavailable):
        return ()


def _aggregates(findings: QuerySet[Finding]) -> dict[str, Any]:
    """The landscape's aggregates over every selected finding, in SQL from the stored summary
    columns: lean tallies, the correlation of safety with capability, differential progress."""
    # From the effects rows (few) to their finding by primary key, not over every finding.
    effects = FindingEffects.objects.filter(Exists(findings.filter(pk=OuterRef("finding_id"))))
    tallies, (pair_ids, safety, capability, se) = _effects_summaries_sql(effects)
    correlation = stats.correlation_with_interval(
        list(safety), list(capability), method="pearson", min_n=MIN_LANDSCAPE_FINDINGS
    ).to_dict()
    return {"tallies": tallies, "correlation": correlation, "progress": _progress_all(pair_ids, safety, capability, se)}


def _landscape_page(page: int | None, page_size: int | None) -> tuple[int, int]:
    number = 1 if page is None else page
    size = LANDSCAPE_PAGE_SIZE if page_size is None else min(page_size, MAX_LANDSCAPE_PAGE_SIZE)
    if number < 1:
        raise ValueError("page must be a whole number of at least 1")
    if size < 1:
        raise ValueError("page_size must be a whole number of at least 1")
    return number, size


def landscape_get(
    *,
    user: Any,
    tag: str | None = None,
    kind: str | None = None,
    plugin: str | None = None,
    page: int | None = None,
    page_size: int | None = None,
) -> dict:
    """Safety vs capability across the visible findings (filtered): the aggregate answer over all
    of them, computed from the stored per-finding summary columns of ``FindingEffects`` and reused
    while neither the selected findings nor any stored effects changed (:func:`_aggregates`), and
    one page of points (by finding id; ``page_info`` says whether more follow). A constant number
    of queries whatever the number of findings (plus one per lineage level)."""
    number, size = _landscape_page(page, page_size)
    visible = finding_list(user=user).prefetch_related(None)
    selected = _landscape_filter(tag=tag, kind=kind, plugin=plugin)
    findings = visible.filter(selected).order_by("id")
    # Versions first: what is computed after them is at least as new as they say.
    data_version, effects_version = _data_versions(visible.db)
    # what the reader may see is part of the version: the cache is per reader, and access is
    # lost without any finding changing (an author withdraws, an embargo ends, a finding goes)
    seen = _fingerprint(visible)
    # a filter's own query: as a FILTER clause of the one above, PostgreSQL would run its EXISTS
    # subqueries once per visible finding and aggregate
    chosen = _fingerprint(findings) if selected else seen
    version = (*data_version, *seen)
    n_findings = chosen[0]
    aggregates = _cached(
        ("landscape-aggregates", visible.db, _visibility_scope(user), tag, kind, plugin, chosen, effects_version),
        lambda: _aggregates(findings),
    )
    tallies = aggregates["tallies"]
    counts = {lean: tallies[f"lean_{i}"] for i, lean in enumerate(LEANS)}
    counts["neither"] += n_findings - tallies["known"]  # no effects yet: "neither"
    n_scored = tallies["scored"]

    page_findings, points, more = _page_points(findings, (number - 1) * size, size)
    progress = _progress_page(aggregates["progress"], {row["id"]: row["title"] for row in page_findings})
    plugins = _cached(
        ("landscape-plugins", visible.db, _visibility_scope(user), tag, kind, plugin, version),
        lambda: _landscape_plugins(findings, plugin),
    )
    theories = [row for row in page_findings if row["kind"] == Finding.Kind.THEORY]
    return {
        "filters": {"tag": tag, "kind": kind, "plugin": plugin},
        "findings": points,
        "page_info": {
            "page": number,
            "page_size": size,
            "count": n_findings,
            "has_next": more,
            "has_previous": number > 1,
        },
        "aggregate": {
            "n_findings": n_findings,
            "n_scored": n_scored,
            "counts": counts,
            "n_unmeasured": n_findings - n_scored,
            "score_unit": "log",
            "answer": _summary(counts, n_findings, n_scored, progress),
            "safety_capability_correlation": aggregates["correlation"],
            "differential_progress": progress,
        },
        "capabilities_correlation": _cached_correlations(visible, plugins, user, version),
        "lineage": _lineage_counts(theories, visible) if theories else [],
    }
