"""Self-reported results: an author posts the measurements of one run executed on their own
cluster. They land as a ``Reproduction(source=self_reported)`` with one succeeded ``Run``, are
checked exactly like a plugin's output (``validate_results``), and sit on the lowest rung of the
evidence ladder: a verdict from registry runs always outranks them.

Everything is validated before anything is written, and written in one transaction with the
``run.finished`` event and the effects recompute request, so a rejected request leaves nothing behind.
Many runs come in one request through ``self_reported_runs_record`` (the batch endpoint): the same
checks per run (errors named ``runs[i].field``), bulk inserts, one ``run.finished`` event per run
(the single endpoint's payload: subscribers keep seeing one event per finished run), one recompute
request. No write reads the finding's other runs, and the two row locks it takes (the finding's
effects row, then the user's quota row) come last, held for a count and the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet, Value
from django.utils import timezone
from interp_registry.sdk import Experiment as PluginExperiment
from interp_registry.sdk import NotReached, Scale

from registry.effects.services import effects_recompute_request
from registry.errors import ApplicationError, PermissionDenied
from registry.events.models import Event
from registry.findings.models import FindingAuthor
from registry.reproductions.models import (
    Artifact,
    Experiment,
    Measurement,
    MetricDefinition,
    Reproduction,
    Run,
    RunSeries,
)
from registry.reproductions.quotas import quota_reserve, runs_requested_record
from registry.reproductions.selectors import experiment_list
from registry.reproductions.series import series_validate
from registry.reproductions.services import (
    ResultRow,
    check_storable,
    metric_catalogue_sync,
    params_validate,
    plugin_resolve,
    validate_results,
)

MAX_SEED = 2**31 - 1
BULK_BATCH = 5000  # rows per INSERT statement


#: Attribute of an ``Experiment`` instance holding ``(user pk, is an accepted author)``: the
#: answer of one look-up, reused by the view's check and the service's within one request.
_AUTHOR_CHECKED = "_reporting_author_checked"


def _is_reporting_author(experiment: Experiment, user: Any) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    checked = getattr(experiment, _AUTHOR_CHECKED, None)
    if checked is None or checked[0] != user.pk:
        checked = (user.pk, experiment.finding.authors.filter(pk=user.pk).exists())
        setattr(experiment, _AUTHOR_CHECKED, checked)
    return checked[1]


def ensure_reporting_author(experiment: Experiment, user: Any) -> None:
    """Only the finding's authors report results from their own cluster (staff included only
    when they are authors: the results are the authors' statement)."""
    if not _is_reporting_author(experiment, user):
        raise PermissionDenied("only the finding's authors may report results of their own runs")


def experiment_for_report(*, user: Any, pk: int) -> Experiment | None:
    """The experiment a self-reported write names, with its finding, if ``user`` may see it
    (else None: a 404). One query for an author (an accepted author always sees the finding, see
    ``finding_list``), which also answers ``ensure_reporting_author``; anyone else costs one more,
    the visibility rules of ``experiment_list``, so that a stranger tells a hidden experiment
    (404) from one they may read but not report on (403). No prefetch of the experiment's
    reproductions: a write must not read them (that made each write cost O(runs so far))."""
    is_author = (
        Exists(FindingAuthor.objects.filter(finding=OuterRef("finding_id"), user_id=user.pk,
                                            status=FindingAuthor.Status.ACCEPTED))
        if getattr(user, "is_authenticated", False) else Value(False)
    )
    experiment = (
        Experiment.objects.select_related("finding").annotate(caller_is_author=is_author).filter(pk=pk).first()
    )
    if experiment is None:
        return None
    setattr(experiment, _AUTHOR_CHECKED, (user.pk, bool(experiment.caller_is_author)))
    if experiment.caller_is_author:
        return experiment
    visible = experiment_list(user=user).prefetch_related(None).filter(pk=pk).exists()
    return experiment if visible else None


def _check_seed(seed: Any) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ApplicationError(f"seed must be an integer between 0 and {MAX_SEED}", field="seed")
    return seed


def _check_hardware(hardware: Any) -> str:
    if not isinstance(hardware, str) or not hardware.strip() or len(hardware) > 200:
        raise ApplicationError("hardware must name the device used ('cpu' or the GPU model)", field="hardware")
    return hardware.strip()


def _expected_params(plugin: type[PluginExperiment], experiment: Experiment) -> dict[str, Any]:
    try:
        return params_validate(plugin, experiment.params)
    except ApplicationError:  # the experiment predates a plugin change; compare as stored
        return experiment.params


def _check_params(
    plugin: type[PluginExperiment], experiment: Experiment, params: Any, *, expected: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The run must have used the experiment's parameters (compared after normalisation)."""
    normalised = params_validate(plugin, params)
    if expected is None:
        expected = _expected_params(plugin, experiment)
    if normalised != expected:
        differing = sorted(k for k in set(normalised) | set(expected) if normalised.get(k) != expected.get(k))
        raise ApplicationError(
            f"params differ from the experiment's in {differing}: self-reported runs must use the "
            f"experiment's parameters",
            field="params",
        )
    return normalised


def _check_environment(environment: Any) -> dict[str, Any]:
    if environment is None:
        return {}
    if not isinstance(environment, dict):
        raise ApplicationError("environment must be a JSON object", field="environment")
    check_storable(environment, "environment")
    return environment


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _censored_value(value: dict[str, Any], field: str) -> NotReached:
    """``{"censored": true, "value": <budget>}``: the event was not reached within the budget."""
    if set(value) != {"censored", "value"} or value.get("censored") is not True or not _is_number(value["value"]):
        raise ApplicationError(
            'a censored value must be {"censored": true, "value": <budget>} with a numeric budget', field=field
        )
    return NotReached(budget=value["value"])


def _check_measurements(plugin: type[PluginExperiment], measurements: Any) -> list[ResultRow]:
    """Type check ({arm: {metric: number | {"censored": true, "value": budget}}}), then the
    plugin-output check the runner uses."""
    if not isinstance(measurements, dict):
        raise ApplicationError("measurements must be an object {arm: {metric: value}}", field="measurements")
    declared = {m.name: m for m in plugin.metrics}
    converted: dict[str, dict[str, Any]] = {}
    for arm, values in measurements.items():
        if not isinstance(values, dict):
            raise ApplicationError(f"arm {arm!r} must be an object {{metric: value}}", field=f"measurements.{arm}")
        converted[arm] = {}
        for metric, value in values.items():
            field = f"measurements.{arm}.{metric}"
            if isinstance(value, dict):
                definition = declared.get(metric)
                if definition is None or not definition.time_to_event:
                    raise ApplicationError(
                        f"metric {metric!r} of arm {arm!r} is not a time-to-event metric: only those may be "
                        f"censored; give a number",
                        field=field,
                    )
                converted[arm][metric] = _censored_value(value, field)
            elif _is_number(value):
                converted[arm][metric] = value
            else:
                censorable = metric in declared and declared[metric].time_to_event
                or_censored = ' or {"censored": true, "value": <budget>}' if censorable else ""
                raise ApplicationError(f"metric {metric!r} of arm {arm!r} must be a number{or_censored}", field=field)
    try:
        return validate_results(plugin, converted)
    except ValueError as exc:
        message = str(exc).replace("run() returned ", "").replace("run() must return", "measurements must be")
        raise ApplicationError(f"invalid measurements: {message}", field="measurements") from None


def _check_plugin_version(plugin: type[PluginExperiment], plugin_version: Any) -> str:
    if plugin_version in (None, ""):
        return plugin.version
    if not isinstance(plugin_version, str) or len(plugin_version) > 50:
        raise ApplicationError("plugin_version must be a version string", field="plugin_version")
    return plugin_version


def _device_for(hardware: str) -> str:
    return Experiment.Device.CPU if hardware.lower().startswith("cpu") else Experiment.Device.GPU


def _catalogue_ensure(plugin: type[PluginExperiment]) -> None:
    """Record the plugin's metric declarations unless the catalogue has them already: one read in
    the common case (``metric_catalogue_sync`` rewrites, hence locks, the plugin's rows, which
    would serialise every writer of the plugin until it commits)."""
    current = {(m.name, m.version, Scale(m.scale).value, bool(m.time_to_event)) for m in plugin.metrics}
    known = set(
        MetricDefinition.objects.filter(plugin=plugin.name, plugin_version=plugin.version)
        .values_list("name", "version", "scale", "time_to_event")
    )
    if not current <= known:
        metric_catalogue_sync(plugin)


@dataclass(frozen=True)
class _Prepared:
    """One validated self-reported run, ready to insert."""

    seed: int
    hardware: str
    rows: list[ResultRow]
    environment: dict[str, Any]
    plugin_version: str
    series: tuple[dict[str, Any], ...] = ()


def _prepare(
    plugin: type[PluginExperiment], experiment: Experiment, item: dict[str, Any], *, expected: dict[str, Any] | None
) -> _Prepared:
    seed = _check_seed(item.get("seed"))
    hardware = _check_hardware(item.get("hardware"))
    _check_params(plugin, experiment, item.get("params"), expected=expected)
    rows = _check_measurements(plugin, item.get("measurements"))
    environment = _check_environment(item.get("environment"))
    plugin_version = _check_plugin_version(plugin, item.get("plugin_version"))
    series = series_validate(item.get("series"), arms=tuple(plugin.arms))  # 400 naming series[i].field
    return _Prepared(seed, hardware, rows, environment, plugin_version, tuple(series))


def _check_experiment(experiment: Experiment, user: Any) -> type[PluginExperiment]:
    ensure_reporting_author(experiment, user)
    if experiment.retracted_at is not None:
        raise ApplicationError("this experiment was retracted; it takes no more results", field="experiment")
    return plugin_resolve(experiment.plugin)


def _as_fetched(queryset: QuerySet, rows: list[Any]) -> QuerySet:
    """``queryset`` evaluated to ``rows`` without a query (what ``prefetch_related`` stores)."""
    queryset._result_cache = rows
    queryset._prefetch_done = True
    return queryset


def _write(
    *, experiment: Experiment, user: Any, plugin: type[PluginExperiment], runs: list[_Prepared]
) -> list[Run]:
    """Insert validated runs in bulk (one reproduction per device, all runs, all measurements, one
    ``run.finished`` event per run), then request the effects recompute and reserve the quota.

    Nothing here reads the finding's other runs. The two row locks (the finding's effects row,
    then the user's quota row: the order ``experiment_create`` takes them in) come last, so they
    are held for a count and the commit only: writers of one finding do not queue behind each
    other's inserts, and never behind a running recompute.
    """
    _catalogue_ensure(plugin)
    now = timezone.now()
    by_device: dict[str, list[_Prepared]] = {}
    for prepared in runs:
        by_device.setdefault(_device_for(prepared.hardware), []).append(prepared)
    reproductions = {
        device: Reproduction.objects.create(
            experiment=experiment, requested_by=user, seeds=[p.seed for p in same], device=device,
            source=Reproduction.Source.SELF_REPORTED,
        )
        for device, same in by_device.items()
    }
    created = Run.objects.bulk_create(
        [
            Run(
                reproduction=reproductions[_device_for(p.hardware)], seed=p.seed, state=Run.State.SUCCEEDED,
                queue=_device_for(p.hardware), attempts=1, progress=1.0, progress_message="self-reported",
                started_at=now, finished_at=now, plugin_version=p.plugin_version, hardware=p.hardware,
                environment=p.environment, requested_plugin_version=p.plugin_version,  # its declared version
            )
            for p in runs
        ],
        batch_size=BULK_BATCH,
    )
    measurements = {
        run.pk: [
            Measurement(run_id=run.pk, arm=r.arm, metric=r.metric, metric_version=r.version, value=r.value,
                        censored=r.censored)
            for r in prepared.rows
        ]
        for run, prepared in zip(created, runs, strict=True)
    }
    Measurement.objects.bulk_create([m for rows in measurements.values() for m in rows], batch_size=BULK_BATCH)
    for run in created:
        run.n_measurements = len(measurements[run.pk])
        run.written_measurements = measurements[run.pk]
    RunSeries.objects.bulk_create(
        [
            RunSeries(run_id=run.pk, arm=curve["arm"], name=curve["name"], steps=curve["steps"],
                      values=curve["values"], logged=curve["logged"])
            for run, prepared in zip(created, runs, strict=True)
            for curve in prepared.series
        ],
        batch_size=BULK_BATCH,
    )
    # The payload run_event_emit writes for a run (registry.reproductions.services._run_payload),
    # built from the rows in hand instead of one query per run.
    Event.objects.bulk_create(
        [
            Event(
                type="run.finished", finding_id=experiment.finding_id, plugin=experiment.plugin,
                payload={
                    "run": run.pk, "reproduction": run.reproduction_id, "experiment": experiment.pk,
                    "finding": experiment.finding_id, "seed": run.seed, "state": run.state,
                    "attempt": run.attempts, "measurements": len(prepared.rows), "self_reported": True,
                    "hardware": prepared.hardware,
                },
            )
            for run, prepared in zip(created, runs, strict=True)
        ],
        batch_size=BULK_BATCH,
    )
    effects_recompute_request(finding_id=experiment.finding_id)
    # no worker time and never active: the daily quota only (registry.reproductions.quotas); the
    # runs are inserted already (rolled back with everything else if the quota refuses them)
    quota_reserve(user=user, requested=len(runs), field=None if len(runs) == 1 else "runs", active=False)
    runs_requested_record(
        user=user, runs_at=[(r.created_at, len(by_device[device])) for device, r in reproductions.items()]
    )
    return created


@transaction.atomic
def self_reported_run_record(
    *,
    experiment: Experiment,
    user: Any,
    seed: Any,
    measurements: Any,
    params: Any,
    hardware: Any,
    environment: Any = None,
    plugin_version: Any = None,
    series: Any = None,
) -> Run:
    """Record one self-reported run of ``experiment`` (with its curves, optional) and request the
    finding's effects recompute."""
    plugin = _check_experiment(experiment, user)
    item = {"seed": seed, "measurements": measurements, "params": params, "hardware": hardware,
            "environment": environment, "plugin_version": plugin_version, "series": series}
    prepared = _prepare(plugin, experiment, item, expected=None)
    run = _write(experiment=experiment, user=user, plugin=plugin, runs=[prepared])[0]
    # the rows just written, as a prefetch would read them back (in id order), and no artifacts
    # yet: the API's answer (RunSerializer) reads these instead of querying them again
    run._prefetched_objects_cache = {
        "measurements": _as_fetched(Measurement.objects.filter(run_id=run.pk), run.written_measurements),
        "artifacts": _as_fetched(Artifact.objects.filter(run_id=run.pk), []),
    }
    return run


# ---------------------------------------------------------------- batches


BATCH_DEFAULTS = ("params", "hardware", "environment", "plugin_version")


def batch_limits() -> tuple[int, int]:
    """(runs, measurements) one batch may hold (settings ``SELF_REPORTED_BATCH_MAX_RUNS`` and
    ``SELF_REPORTED_BATCH_MAX_MEASUREMENTS``)."""
    return (
        int(getattr(settings, "SELF_REPORTED_BATCH_MAX_RUNS", 1000)),
        int(getattr(settings, "SELF_REPORTED_BATCH_MAX_MEASUREMENTS", 100_000)),
    )


def _count_values(measurements: Any) -> int:
    if not isinstance(measurements, dict):
        return 0
    return sum(len(values) for values in measurements.values() if isinstance(values, dict))


def _item_error(index: int, exc: ApplicationError) -> ApplicationError:
    """The error of one item, its field (and any per-field details) prefixed with ``runs[i].``."""
    prefix = f"runs[{index}]"
    field = f"{prefix}.{exc.field}" if exc.field else prefix
    extra = dict(exc.extra)
    if isinstance(extra.get("errors"), dict):
        extra["errors"] = {f"{prefix}.{k}": v for k, v in extra["errors"].items()}
        extra["errors"].setdefault(field, [f"{prefix}: {exc.message}"])
    return ApplicationError(f"{prefix}: {exc.message}", field=field, status=exc.status, extra=extra)


@transaction.atomic
def self_reported_runs_record(*, experiment: Experiment, user: Any, runs: Any, **defaults: Any) -> list[Run]:
    """Record many self-reported runs of ``experiment`` at once, all or nothing.

    ``runs`` is a list of items shaped like the single-run request (``seed``, ``measurements``,
    ``params``, ``hardware``, ``environment``, ``plugin_version``); ``defaults`` (the same keys but
    ``seed`` and ``measurements``) fill what an item leaves out. Every item is validated before
    anything is written; the first invalid one is a 400 naming it (``runs[3].measurements.baseline.risk``).
    More than the batch limits (runs, measurements in all) is a 413. Then one bulk insert per
    table, one ``run.finished`` event per run (as the single-run endpoint writes it, so that
    subscribers see every run), one effects recompute request, and the daily quota counted for
    every run.
    """
    plugin = _check_experiment(experiment, user)
    max_runs, max_measurements = batch_limits()
    if not isinstance(runs, list) or not runs:
        raise ApplicationError("runs must be a non-empty list of runs", field="runs")
    if len(runs) > max_runs:
        raise ApplicationError(
            f"a batch holds at most {max_runs} runs; this one has {len(runs)}: split it", field="runs", status=413,
            extra={"limit": max_runs, "given": len(runs)},
        )
    total = sum(_count_values(item.get("measurements")) for item in runs if isinstance(item, dict))
    if total > max_measurements:
        raise ApplicationError(
            f"a batch holds at most {max_measurements} measurements; this one has {total}: split it",
            field="runs", status=413, extra={"limit": max_measurements, "given": total},
        )
    unknown = sorted(set(defaults) - set(BATCH_DEFAULTS))
    if unknown:
        raise ApplicationError(f"unknown batch fields {unknown}", field=unknown[0])
    expected = _expected_params(plugin, experiment)
    prepared = []
    for index, item in enumerate(runs):
        if not isinstance(item, dict):
            raise ApplicationError(f"runs[{index}] must be an object", field=f"runs[{index}]")
        extra_keys = sorted(set(item) - {"seed", "measurements", "series", *BATCH_DEFAULTS})
        if extra_keys:
            raise ApplicationError(
                f"runs[{index}]: unknown fields {extra_keys}", field=f"runs[{index}].{extra_keys[0]}"
            )
        merged = {**{k: v for k, v in defaults.items() if v is not None}, **item}
        try:
            prepared.append(_prepare(plugin, experiment, merged, expected=expected))
        except ApplicationError as exc:
            raise _item_error(index, exc) from None
    return _write(experiment=experiment, user=user, plugin=plugin, runs=prepared)
