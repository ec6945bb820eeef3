"""Experiments, reproductions and the run state machine.

The database row is the source of truth; the broker only carries run ids. Every state change
goes through ``run_transition``: a compare-and-set against the table of allowed transitions, so a
duplicate message, a late result or a result for a run that was reclaimed changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from interp_registry.sdk import Experiment as PluginExperiment
from interp_registry.sdk import Scale
from interp_registry.testing import ResultRow, validate_results  # noqa: F401 - the one contract, re-exported
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import ValidationError

from plugins.registry import PluginNotFound, PluginUnavailable, all_plugins, get_plugin
from registry.effects.services import effects_recompute_request
from registry.errors import ApplicationError
from registry.events.services import event_emit
from registry.findings.models import Finding
from registry.reproductions.models import (
    TERMINAL_STATES,
    Artifact,
    Experiment,
    Measurement,
    MetricDefinition,
    Reproduction,
    Run,
    WorkerPresence,
)

logger = logging.getLogger(__name__)
State = Run.State

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    State.QUEUED: frozenset({State.RUNNING, State.CANCELLED, State.FAILED}),
    State.RUNNING: frozenset({State.SUCCEEDED, State.FAILED, State.TIMED_OUT, State.CANCELLED, State.QUEUED}),
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
    State.TIMED_OUT: frozenset(),
    State.CANCELLED: frozenset(),
}
MAX_LOG_CHARS = 200_000
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# ---------------------------------------------------------------- plugins and metrics


def plugin_resolve(name: str, *, field: str = "plugin") -> type[PluginExperiment]:
    try:
        return get_plugin(name)
    except PluginNotFound:
        known = ", ".join(sorted(n for n, e in all_plugins().items() if e.available)) or "none"
        raise ApplicationError(f"unknown plugin {name!r}; available plugins: {known}", field=field) from None
    except PluginUnavailable as exc:
        raise ApplicationError(f"plugin unavailable: {exc}", field=field) from None


def metric_catalogue_sync(plugin: type[PluginExperiment]) -> None:
    """Record the plugin's metric declarations (idempotent; a new metric version adds a row)."""
    for metric in plugin.metrics:
        MetricDefinition.objects.update_or_create(
            plugin=plugin.name,
            name=metric.name,
            version=metric.version,
            defaults={
                "plugin_version": plugin.version,
                "axis": metric.axis.value,
                "higher_is_better": metric.higher_is_better,
                "unit": metric.unit,
                "description": metric.description,
                "scale": Scale(metric.scale).value,
                "time_to_event": metric.time_to_event,
            },
        )


def metric_catalogue_sync_installed() -> None:
    """Sync the catalogue for every available plugin whose version, or whose metrics' scale or
    time-to-event flag, it does not know yet (reads only, once the catalogue is up to date)."""
    known = set(MetricDefinition.objects.values_list("plugin", "plugin_version").distinct())
    declared = set(MetricDefinition.objects.values_list("plugin", "name", "version", "scale", "time_to_event"))
    for entry in all_plugins().values():
        if not entry.available:
            continue
        plugin = entry.experiment
        current = {(plugin.name, m.name, m.version, Scale(m.scale).value, m.time_to_event) for m in plugin.metrics}
        if (plugin.name, plugin.version) not in known or not current <= declared:
            metric_catalogue_sync(plugin)


def metric_known_for_finding(*, finding: Finding, metric: str) -> bool:
    plugin_names = set(finding.experiments.values_list("plugin", flat=True))
    entries = all_plugins()
    if not plugin_names:
        plugin_names = {name for name, entry in entries.items() if entry.available}
    for name in plugin_names:
        entry = entries.get(name)
        if entry and entry.available and any(m.name == metric for m in entry.experiment.metrics):
            return True
    return False


def params_validate(plugin: type[PluginExperiment], params: dict[str, Any]) -> dict[str, Any]:
    """Validate against the plugin's pydantic model; a 400 names the offending field."""
    if not isinstance(params, dict):
        raise ApplicationError("params must be a JSON object", field="params")
    try:
        validated = plugin.Params.model_validate(params)
    except ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for error in exc.errors():
            location = ".".join(str(part) for part in error["loc"]) or "params"
            errors.setdefault(f"params.{location}", []).append(error["msg"])
        first = next(iter(errors))
        raise ApplicationError(
            f"invalid parameters for plugin {plugin.name!r}: {first}: {errors[first][0]}",
            field="params",
            extra={"errors": errors},
        ) from None
    normalised = validated.model_dump(mode="json")
    check_storable(normalised, "params")
    return normalised


def check_storable(value: Any, location: str) -> None:
    """Refuse what JSON columns cannot hold (NaN/Infinity, NUL characters): a 400, not a 500."""
    import math

    problem = None
    if isinstance(value, float) and not math.isfinite(value):
        problem = "must be a finite number"
    elif isinstance(value, str) and "\x00" in value:
        problem = "must not contain NUL characters"
    if problem:
        field = location.split(".", 1)[0]
        raise ApplicationError(f"{location}: {problem}", field=field, extra={"errors": {location: [problem]}})
    if isinstance(value, dict):
        for key, item in value.items():
            check_storable(str(key), location)
            check_storable(item, f"{location}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_storable(item, f"{location}.{index}")


def _check_version_constraint(plugin: type[PluginExperiment], constraint: str) -> None:
    if not constraint:
        return
    try:
        spec = SpecifierSet(constraint)
    except InvalidSpecifier:
        raise ApplicationError(
            f"{constraint!r} is not a version constraint (e.g. '>=1.0,<2')", field="plugin_version_constraint"
        ) from None
    try:
        installed = Version(plugin.version)
    except InvalidVersion:
        return
    if installed not in spec:
        raise ApplicationError(
            f"installed {plugin.name} is version {plugin.version}, outside {constraint!r}",
            field="plugin_version_constraint",
        )


def check_requested_version(plugin: type[PluginExperiment], requested: str) -> None:
    """A worker runs a run only with the plugin version it was requested with (``requested``: the
    server's installed version at the request; empty for runs older than the field: not checked).
    Raises an ApplicationError whose message the run's failure records.

    The run fails rather than going back to the queue: queues are by resource (cpu, gpu), not by
    plugin version, so a requeued run could come back to the same worker until its attempts run
    out, and no worker may have the version at all. A failed run says at once which version is
    where; the author reproduces again once the workers are upgraded."""
    if requested and requested != plugin.version[:50]:  # as reproduction_request stores it
        raise ApplicationError(
            f"plugin {plugin.name} is {plugin.version} on this worker, {requested} was requested",
            field="plugin_version",
        )


def default_seed_count(plugin: type[PluginExperiment]) -> int:
    """Seeds per reproduction when none are asked for: the plugin's ``recommended_seeds`` (capped
    at MAX_SEEDS_PER_REPRODUCTION), else 3."""
    recommended = getattr(plugin, "recommended_seeds", None)
    if isinstance(recommended, int) and not isinstance(recommended, bool) and recommended >= 1:
        return min(recommended, settings.MAX_SEEDS_PER_REPRODUCTION)
    return min(3, settings.MAX_SEEDS_PER_REPRODUCTION)


def params_with_preset(plugin: type[PluginExperiment], preset: str | None, params: Any) -> Any:
    """The preset's parameters (a name from the plugin's ``presets``) overridden by ``params``; a
    400 naming ``preset`` for one the plugin does not declare."""
    if preset is None:
        return params
    if not isinstance(preset, str) or preset not in plugin.presets:
        known = ", ".join(sorted(plugin.presets)) or "none"
        raise ApplicationError(
            f"plugin {plugin.name!r} has no preset {preset!r}; its presets: {known}", field="preset"
        )
    if params is not None and not isinstance(params, dict):
        return params  # params_validate names the field
    return {**plugin.presets[preset], **(params or {})}


# ---------------------------------------------------------------- experiments and reproductions


@transaction.atomic
def experiment_create(
    *,
    finding: Finding,
    user: Any,
    plugin: str,
    params: dict[str, Any] | None = None,
    preset: str | None = None,
    label: str = "",
    plugin_version_constraint: str = "",
    default_seeds: int | None = None,
    device: str | None = None,
    time_limit_s: int | None = None,
    memory_limit_mb: int | None = None,
    reproduce: bool = True,
) -> Experiment:
    """Attach an experiment to a finding and (unless told not to) queue its first reproduction
    (within the user's quota: beyond it nothing is created, a 429). ``preset``: start from that
    preset's parameters, ``params`` overriding them; ``default_seeds`` None: the plugin's
    ``recommended_seeds`` (else 3)."""
    from registry.findings.models import Claim
    from registry.findings.services import _ensure_can_edit, claim_problem_for_metric

    _ensure_can_edit(finding, user)
    plugin_cls = plugin_resolve(plugin)
    _check_version_constraint(plugin_cls, plugin_version_constraint)
    merged = params_with_preset(plugin_cls, preset, params)
    normalised = params_validate(plugin_cls, {} if merged is None else merged)  # [], 0, "": a 400, not {}
    if default_seeds is None:
        default_seeds = default_seed_count(plugin_cls)
    if not 1 <= default_seeds <= settings.MAX_SEEDS_PER_REPRODUCTION:
        raise ApplicationError(
            f"default_seeds must be between 1 and {settings.MAX_SEEDS_PER_REPRODUCTION}", field="default_seeds"
        )
    time_limit_s = _check_run_limits(plugin_cls, time_limit_s=time_limit_s, memory_limit_mb=memory_limit_mb)
    if not finding.experiments.filter(plugin=plugin).exists():
        # a plugin new to the finding: every current claim on a metric it declares must be decidable
        # under its declaration (a claim made before the first experiment needed only some
        # installed plugin to allow it; plugins in use were checked when the claim was made or
        # when their first experiment was added)
        declarations = {m.name: m for m in plugin_cls.metrics}
        for claim in Claim.objects.filter(finding=finding, is_current=True, metric__in=declarations).order_by("pk"):
            declaration = declarations[claim.metric]
            problem = (claim_problem_for_metric(claim=claim, declaration=declaration) or "").rstrip(".")
            if problem:
                raise ApplicationError(
                    f"claim {claim.pk} on {claim.metric!r} could not be decided with plugin {plugin!r}, which "
                    f"declares {claim.metric!r} on the {Scale(declaration.scale).value} scale: {problem}. Supersede "
                    f"the claim first (post a new claim with supersedes={claim.pk} and a threshold_unit and "
                    "threshold this plugin can decide), then add the experiment",
                    field="plugin",
                    extra={"claim": claim.pk, "metric": claim.metric},
                )
    effects_recompute_request(finding_id=finding.pk)
    metric_catalogue_sync(plugin_cls)
    experiment = Experiment.objects.create(
        finding=finding,
        plugin=plugin,
        label=label.strip(),
        plugin_version_constraint=plugin_version_constraint,
        params=normalised,
        default_seeds=default_seeds,
        device=device or plugin_cls.resources.device,
        time_limit_s=time_limit_s,
        memory_limit_mb=memory_limit_mb,
        created_by=user,
    )
    event_emit(
        type="experiment.created",
        finding_id=finding.pk,
        plugin=plugin,
        payload={"finding": finding.pk, "experiment": experiment.pk, "plugin": plugin, "params": normalised},
    )
    if reproduce:
        reproduction_request(experiment=experiment, user=user, quota_field="reproduce")
    return experiment


def _check_run_limits(
    plugin: type[PluginExperiment], *, time_limit_s: int | None, memory_limit_mb: int | None
) -> int:
    """A 400 naming the field beyond RUN_MAX_TIME_LIMIT_S / RUN_MAX_MEMORY_LIMIT_MB; returns the
    time limit to store (the plugin's default when none is given, capped at the maximum)."""
    maximum = settings.RUN_MAX_TIME_LIMIT_S
    if time_limit_s is not None:
        if isinstance(time_limit_s, bool) or not isinstance(time_limit_s, int) or not 1 <= time_limit_s <= maximum:
            raise ApplicationError(f"time_limit_s must be between 1 and {maximum} seconds", field="time_limit_s")
    else:
        time_limit_s = min(plugin.resources.time_limit_s, maximum)
    if memory_limit_mb is not None:
        memory_max = settings.RUN_MAX_MEMORY_LIMIT_MB
        if (isinstance(memory_limit_mb, bool) or not isinstance(memory_limit_mb, int)
                or not 1 <= memory_limit_mb <= memory_max):
            raise ApplicationError(
                f"memory_limit_mb must be between 1 and {memory_max} (MB)", field="memory_limit_mb"
            )
    return time_limit_s


def gpu_worker_available() -> bool:
    """Whether a worker consuming the gpu queue was seen within GPU_WORKER_SEEN_WINDOW_S."""
    since = timezone.now() - timedelta(seconds=settings.GPU_WORKER_SEEN_WINDOW_S)
    return any("gpu" in worker.queues for worker in WorkerPresence.objects.filter(last_seen__gte=since))


@transaction.atomic
def reproduction_request(
    *,
    experiment: Experiment,
    user: Any,
    seeds: list[int] | None = None,
    n_seeds: int | None = None,
    device: str | None = None,
    quota_field: str | None = "seeds",
) -> Reproduction:
    """Fan a reproduction out into one queued run per seed; dispatch after commit.

    Within the user's quota (``registry.reproductions.quotas``): checked under a lock on the
    user's quota row in this transaction, so concurrent requests are counted one after another;
    beyond a cap a ``QuotaExceeded`` (429, its error under ``quota_field``) and nothing written."""
    from registry.reproductions.quotas import quota_reserve, runs_requested_record

    if experiment.retracted_at is not None:
        raise ApplicationError("this experiment was retracted; it cannot be reproduced", field="experiment")
    if seeds is None:
        count = n_seeds or experiment.default_seeds
        if not 1 <= count <= settings.MAX_SEEDS_PER_REPRODUCTION:
            raise ApplicationError(
                f"n_seeds must be between 1 and {settings.MAX_SEEDS_PER_REPRODUCTION}", field="n_seeds"
            )
        seeds = list(range(count))
    if not seeds or len(seeds) > settings.MAX_SEEDS_PER_REPRODUCTION:
        raise ApplicationError(
            f"give between 1 and {settings.MAX_SEEDS_PER_REPRODUCTION} seeds", field="seeds"
        )
    if len(set(seeds)) != len(seeds):
        raise ApplicationError("seeds must be distinct", field="seeds")
    if any(not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < 2**31 for s in seeds):
        raise ApplicationError("seeds must be integers between 0 and 2^31-1", field="seeds")
    plugin_cls = plugin_resolve(experiment.plugin)
    _check_version_constraint(plugin_cls, experiment.plugin_version_constraint)
    device = device or experiment.device
    quota_reserve(user=user, requested=len(seeds), field=quota_field)
    reproduction = Reproduction.objects.create(
        experiment=experiment, requested_by=user, seeds=seeds, device=device
    )
    runs = Run.objects.bulk_create(
        # each run remembers the version it was requested with: a worker with another one refuses it
        [Run(reproduction=reproduction, seed=seed, queue=device, requested_plugin_version=plugin_cls.version[:50])
         for seed in seeds]
    )
    runs_requested_record(user=user, runs_at=[(reproduction.created_at, len(runs))])
    event_emit(
        type="reproduction.requested",
        finding_id=experiment.finding_id,
        plugin=experiment.plugin,
        payload={
            "finding": experiment.finding_id,
            "experiment": experiment.pk,
            "reproduction": reproduction.pk,
            "seeds": seeds,
            "device": device,
        },
    )
    run_ids = [run.pk for run in runs]
    # the runs were just made queued: sent as they are, without reading them back
    transaction.on_commit(lambda: runs_dispatch(run_ids, runs=runs))
    return reproduction


def reproduction_waiting_for_gpu(reproduction: Reproduction) -> bool:
    if reproduction.device != "gpu":
        return False
    pending = reproduction.runs.filter(state=State.QUEUED).exists()
    return pending and not gpu_worker_available()


def runs_dispatch(
    run_ids: list[int], *, front: bool = False, resent: bool = False, runs: list[Run] | None = None
) -> None:
    """Send run ids to the broker. Never raises and never waits long: a publish that fails (an
    unreachable or frozen broker fails within BROKER_SOCKET_TIMEOUT_S) is logged, the rest of the
    batch is not attempted, and the reaper re-sends the runs left undispatched.

    Each send gets its own task id ``run-<id>-<random>`` (see ``worker.broker.run_task_id``): the
    reaper finds a run's message in the broker by it. On Redis, ``front``: ahead of everything
    waiting (a run whose worker died); ``resent``: ahead of the new runs (a message lost in a broker
    restart: after one, every queued run is re-sent, and a dead worker's run must not wait behind
    them all). Oldest runs first. ``runs``: the queued runs themselves (with their reproduction and
    experiment), when the caller just made them; otherwise those of ``run_ids`` still queued are read.
    """
    from worker.broker import PRIORITY_FRONT, PRIORITY_NEW, PRIORITY_RESENT, is_redis, run_task_id
    from worker.celery import app

    priority = PRIORITY_FRONT if front else PRIORITY_RESENT if resent else PRIORITY_NEW
    options = {"priority": priority} if is_redis() else {}

    if runs is not None:
        queued = sorted(runs, key=lambda run: run.pk)
    else:
        queued = list(Run.objects.filter(pk__in=run_ids, state=State.QUEUED).select_related(
            "reproduction__experiment"
        ).order_by("pk"))
    sent: list[int] = []
    batches: dict[str, int] = {}
    for run in queued:
        # The worker enforces the run's own limit (stop, SIGTERM, SIGKILL after RUN_KILL_GRACE_S)
        # and retries saving its result: Celery's limits are only a backstop beyond all that. A
        # worker may train the run with others of its reproduction (RUN_BATCH_SEEDS) under their
        # limits together: the backstop allows that many (the worker never batches beyond it).
        experiment = run.reproduction.experiment
        if experiment.plugin not in batches:
            batches[experiment.plugin] = batch_seeds_allowed(experiment.plugin)
        limit = run_backstop_s(experiment.time_limit_s, batches[experiment.plugin])
        try:
            app.send_task(
                "worker.run_execute",
                args=[run.pk],
                queue=run.queue,
                task_id=run_task_id(run.pk, uuid.uuid4().hex[:12]),
                retry=False,  # one try bounded by the socket timeouts; redis-py replaces a dead pooled connection
                soft_time_limit=limit,
                time_limit=limit + 30,
                **options,
            )
        except Exception:  # noqa: BLE001 - the broker is down: the reaper re-sends
            logger.warning("could not dispatch run %s (and %d more); the reaper will retry", run.pk,
                           len(queued) - len(sent) - 1, exc_info=True)
            break
        sent.append(run.pk)
    if sent:  # one statement for the batch; a run left unstamped is re-sent by the reaper (the claim dedupes)
        Run.objects.filter(pk__in=sent).update(dispatched_at=timezone.now())


# ---------------------------------------------------------------- the run state machine


def run_transition(
    *, run_id: int, to_state: str, token: uuid.UUID | None = None, only_if: Q | None = None, **fields: Any
) -> bool:
    """Compare-and-set a run to ``to_state`` from any state allowed to reach it.

    With ``token``, only the holder of the current claim may make the change; ``only_if`` adds a
    condition checked in the same statement. Returns whether the change happened; terminal states
    never change.
    """
    sources = [state for state, targets in ALLOWED_TRANSITIONS.items() if to_state in targets]
    query = Run.objects.filter(pk=run_id, state__in=sources)
    if token is not None:
        query = query.filter(claim_token=token)
    if only_if is not None:
        query = query.filter(only_if)
    return query.update(state=to_state, **fields) == 1


def run_claim(*, run_id: int, worker_host: str) -> uuid.UUID | None:
    """Claim a run for this worker; None when it is not ours to run (a duplicate message).

    A queued run is claimed; so is a running run whose heartbeat is older than
    RUN_HEARTBEAT_TIMEOUT_S (its worker died: this is its redelivered or re-sent message), while
    attempts remain. One UPDATE decides, so two messages never both win (PostgreSQL re-checks the
    condition on the row another claim just changed: its heartbeat is then fresh). A claim bumps
    ``attempts`` and issues a new ``claim_token``; the previous holder's heartbeats, results and
    failures all require its own token, so a late write from a worker presumed dead changes nothing
    (and its next heartbeat tells it to stop).
    """
    claimed = run_claim_loaded(run_id=run_id, worker_host=worker_host)
    return None if claimed is None else claimed[0]


def run_claim_loaded(*, run_id: int, worker_host: str) -> tuple[uuid.UUID, Run] | None:
    """``run_claim``, also returning the claimed run as it now is (with its reproduction and
    experiment: what the worker reads next). The common case, a queued run, is one UPDATE; only
    when it is not queued is its state read (and the broker's reaper clock, for a takeover)."""
    token = uuid.uuid4()
    now = timezone.now()
    claim_fields = {
        "state": State.RUNNING, "claim_token": token, "attempts": F("attempts") + 1, "started_at": now,
        "heartbeat_at": now, "worker_host": worker_host, "progress": 0.0, "progress_message": "starting",
        "logs": "",  # a requeued run's earlier attempt's log is not this attempt's
        "batch_size": 1,  # run_claim_batch says otherwise when it adds runs to this one's process
    }
    with transaction.atomic():
        taken_over_from = None
        if Run.objects.filter(pk=run_id, state=State.QUEUED).update(**claim_fields) != 1:
            previous = Run.objects.filter(pk=run_id).values_list("state", "worker_host").first()
            if previous is None or previous[0] != State.RUNNING:
                return None
            abandoned = Q(state=State.RUNNING, attempts__lt=settings.RUN_MAX_ATTEMPTS) & (
                Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=_claim_stale_before(now))
            )
            if Run.objects.filter(abandoned, pk=run_id).update(**claim_fields) != 1:
                return None
            taken_over_from = previous[1]
            logger.warning("run %s: taken over from %s, whose heartbeat stopped", run_id, taken_over_from)
        if taken_over_from is not None:
            run = run_event_emit("run.started", run_id, taken_over_from=taken_over_from)
        else:
            run = run_event_emit("run.started", run_id)
    return token, run


def run_backstop_s(time_limit_s: float, runs: int = 1) -> int:
    """How long the worker may hold ``runs`` runs of one process (a batch: seeds in parallel) before
    Celery's soft limit and the reaper step in: each run's time limit and its result-save retries,
    then the stop's kill grace and a minute. For one run: its limit + grace + save retries + 60 s."""
    runs = max(1, int(runs))
    return math.ceil(runs * (float(time_limit_s) + float(settings.RUN_SAVE_RETRY_S))
                     + float(settings.RUN_KILL_GRACE_S) + 60)


def runs_within_backstop(time_limit_s: float, backstop_s: float) -> int:
    """The most runs one process may train together within ``backstop_s`` (at least 1): the
    inverse of ``run_backstop_s``."""
    room = float(backstop_s) - float(settings.RUN_KILL_GRACE_S) - 60
    per_run = float(time_limit_s) + float(settings.RUN_SAVE_RETRY_S)
    return max(1, int((room + 1e-6) // max(per_run, 1e-9)))


def batch_seeds_allowed(plugin: str | type[PluginExperiment]) -> int:
    """How many runs of a reproduction of this plugin (a class, or a name resolved here) one
    process may train together: RUN_BATCH_SEEDS where the plugin opts in with
    ``batched_seeds = True``, else 1."""
    size = int(settings.RUN_BATCH_SEEDS)
    if size <= 1:
        return 1
    if isinstance(plugin, str):
        try:
            plugin = get_plugin(plugin)
        except Exception:  # noqa: BLE001 - not installed here: one run per process
            return 1
    return size if getattr(plugin, "batched_seeds", False) else 1


def run_claim_batch(*, lead: Run, limit: int, worker_host: str) -> list[tuple[uuid.UUID, Run]]:
    """Claim, for the worker that holds ``lead``, up to ``limit`` more queued runs of its
    reproduction (lowest seeds first; the same requested plugin version) to train in one batched
    process: each gets a claim token of its own and its ``run.started`` event, exactly as
    ``run_claim_loaded`` claims one, so each is heartbeaten, reaped and finished on its own. Rows
    another transaction holds are skipped (SKIP LOCKED), and each UPDATE re-checks ``queued``, so a
    run is never claimed twice; its own message, when it comes, finds it running and does nothing."""
    if limit <= 0:
        return []
    claimed: list[tuple[uuid.UUID, Run]] = []
    with transaction.atomic():
        candidates = list(
            Run.objects.select_for_update(skip_locked=True)
            .filter(reproduction_id=lead.reproduction_id, state=State.QUEUED,
                    requested_plugin_version=lead.requested_plugin_version)
            .exclude(pk=lead.pk).order_by("seed", "pk").values_list("pk", flat=True)[:limit]
        )
        for run_id in candidates:
            token = uuid.uuid4()
            now = timezone.now()
            updated = Run.objects.filter(pk=run_id, state=State.QUEUED).update(
                state=State.RUNNING, claim_token=token, attempts=F("attempts") + 1, started_at=now,
                heartbeat_at=now, worker_host=worker_host, progress=0.0, progress_message="starting", logs="",
            )
            if updated == 1:
                claimed.append((token, run_event_emit("run.started", run_id, batch_of=lead.pk)))
        if claimed:  # the reaper gives the batch its runs' time limits together
            size = len(claimed) + 1
            Run.objects.filter(pk__in=[lead.pk, *(run.pk for _, run in claimed)]).update(batch_size=size)
            for _, run in claimed:
                run.batch_size = size
            lead.batch_size = size
    return claimed


def _claim_stale_before(now: datetime) -> datetime:
    """A running run's heartbeat older than this means its worker is gone (for ``run_claim``),
    with the reaper's post-outage grace: see ``claim_stale_cutoff``."""
    from worker import broker

    try:
        beat = broker.beat_last_seen()
    except Exception:  # noqa: BLE001 - an unreachable broker: heartbeats alone decide
        beat = None
    cutoff = claim_stale_cutoff(
        now.timestamp(), broker.reaper_clock_load(), beat,
        interval=float(settings.REAPER_INTERVAL_S), timeout=float(settings.RUN_HEARTBEAT_TIMEOUT_S),
    )
    return datetime.fromtimestamp(cutoff, tz=UTC)


def claim_stale_cutoff(
    now: float, clock: dict[str, Any] | None, beat_last_seen: float | None, *, interval: float, timeout: float
) -> float:
    """The heartbeat time (epoch seconds) below which a redelivered message may take a running
    run over; pure. Normally ``now - timeout``. After a blind spell (the database was down: no
    worker could write a heartbeat, and the reaper could not pass), runs alive at the spell's start
    get ``timeout`` from its end, as the reaper gives them (``heartbeat_effective``): while the
    reaper's clock says it resumed less than ``timeout`` ago, or while it has not passed for
    3 x ``interval`` though the beat is alive (the reaper failed: the database is just back),
    only heartbeats older than ``timeout`` before the spell count as stale. A dead beat gives no
    grace: then a redelivered message is the only way a dead worker's run comes back."""
    stale_before = now - timeout
    if not clock:
        return stale_before
    blind_from, resumed_at = clock.get("blind_from"), clock.get("resumed_at")
    if blind_from is not None and resumed_at is not None and now - resumed_at < timeout:
        return min(stale_before, blind_from - timeout)
    last_success = clock.get("last_success")
    beat_alive = beat_last_seen is not None and now - beat_last_seen <= 3 * interval
    if last_success is not None and now - last_success > 3 * interval and beat_alive:
        return min(stale_before, last_success - timeout)
    return stale_before


def run_event_emit(type: str, run_id: int, **extra: Any) -> Run:
    """Write a run.* event for the run as it now is (inside the transaction of the change)."""
    run = Run.objects.select_related("reproduction__experiment").get(pk=run_id)
    experiment = run.reproduction.experiment
    event_emit(
        type=type, finding_id=experiment.finding_id, plugin=experiment.plugin, payload=_run_payload(run, **extra)
    )
    return run


def _run_payload(run: Run, **extra: Any) -> dict[str, Any]:
    experiment = run.reproduction.experiment
    return {
        "run": run.pk,
        "reproduction": run.reproduction_id,
        "experiment": experiment.pk,
        "finding": experiment.finding_id,
        "seed": run.seed,
        "state": run.state,
        "attempt": run.attempts,
        **extra,
    }


def run_heartbeat(
    *, run_id: int, token: uuid.UUID, progress: float | None = None, message: str | None = None,
    logs: str | None = None,
) -> str | None:
    """Record liveness (and progress, and the log so far); returns the run's current state (None if
    no longer ours)."""
    fields: dict[str, Any] = {"heartbeat_at": timezone.now()}
    if logs is not None:
        fields["logs"] = storable_text(logs)[-MAX_LOG_CHARS:]
    if progress is not None:
        fields["progress"] = max(0.0, min(1.0, float(progress)))
    if message is not None:
        fields["progress_message"] = message[:300]
    # One statement in the common case: the row matched state=running, so that is its state.
    if Run.objects.filter(pk=run_id, claim_token=token, state=State.RUNNING).update(**fields) == 1:
        return State.RUNNING
    return Run.objects.filter(pk=run_id, claim_token=token).values_list("state", flat=True).first()


def _store_artifact(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = Path(settings.ARTIFACT_ROOT) / digest[:2] / digest
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        temporary.write_bytes(data)
        temporary.replace(path)
    return digest


def artifact_path(artifact: Artifact) -> Path:
    return Path(settings.ARTIFACT_ROOT) / artifact.sha256[:2] / artifact.sha256


def storable_text(text: str) -> str:
    """PostgreSQL text cannot hold NUL characters."""
    return text.replace("\x00", "\ufffd")


def unique_name(name: str, taken: Any) -> str:
    """``name``, or ``name`` with a -2, -3... suffix before its extension when already taken."""
    if name not in taken:
        return name
    stem, dot, extension = name.rpartition(".") if "." in name else (name, "", "")
    index = 2
    while f"{stem}-{index}{dot}{extension}" in taken:
        index += 1
    return f"{stem}-{index}{dot}{extension}"


def safe_artifact_name(name: str) -> str:
    cleaned = SAFE_NAME.sub("_", Path(name).name).strip("._") or "artifact"
    return cleaned[:200]


def runs_heartbeat_unlocked(claims: dict[int, uuid.UUID]) -> int:
    """Record liveness for several running runs in one statement, skipping any whose row another
    transaction holds (a batch's run being saved: its save is in progress, and waiting on it would
    starve the others). Returns how many were recorded."""
    if not claims:
        return 0
    holder = Q()
    for run_id, token in claims.items():
        holder |= Q(pk=run_id, claim_token=token)
    with transaction.atomic():
        free = Run.objects.filter(holder, state=State.RUNNING).select_for_update(skip_locked=True).values("pk")
        return Run.objects.filter(pk__in=free).update(heartbeat_at=timezone.now())


def run_succeed(
    *,
    run_id: int,
    token: uuid.UUID | None,
    rows: list[ResultRow] | list[tuple],
    artifacts: dict[str, tuple[bytes, str]],
    environment: dict[str, Any],
    hardware: str,
    plugin_version: str,
    logs: str,
    series: list[dict[str, Any]] | None = None,
    claimed: Run | None = None,
) -> bool:
    """Write measurements, curves, artifacts, the state change and the event in one transaction.
    ``claimed``: the run as ``run_claim_loaded`` returned it to this token's holder (its event is
    then written without reading the run again)."""
    rows = [ResultRow(*row) for row in rows]
    stored = _artifact_files(artifacts)
    with transaction.atomic():
        changed = run_transition(
            run_id=run_id,
            to_state=State.SUCCEEDED,
            token=token,
            finished_at=timezone.now(),
            progress=1.0,
            progress_message="finished",
            environment=environment,
            hardware=storable_text(hardware)[:200],
            plugin_version=plugin_version[:50],
            logs=storable_text(logs)[-MAX_LOG_CHARS:],
        )
        if not changed:
            logger.warning("run %s: result discarded, the run is no longer ours", run_id)
            return False
        Measurement.objects.bulk_create(
            [
                Measurement(run_id=run_id, arm=r.arm, metric=r.metric, metric_version=r.version, value=r.value,
                            censored=r.censored)
                for r in rows
            ]
        )
        _partial_bulk_create(run_id=run_id, state=State.SUCCEEDED, stored=stored, series=series)
        if claimed is not None and claimed.pk == run_id and token is not None and claimed.claim_token == token:
            # the token matched: the row is the claimed one (same attempt) with the fields just written
            claimed.state, claimed.plugin_version = State.SUCCEEDED, plugin_version[:50]
            experiment = claimed.reproduction.experiment
            event_emit(type="run.finished", finding_id=experiment.finding_id, plugin=experiment.plugin,
                       payload=_run_payload(claimed, measurements=len(rows)))
            _after_run_finished(claimed)
        else:
            _after_run_finished(run_event_emit("run.finished", run_id, measurements=len(rows)))
    return True


def _artifact_files(artifacts: dict[str, tuple[bytes, str]] | None) -> dict[str, tuple[str, int, str]]:
    """Store the files (content-addressed, outside any transaction): {safe name: (sha256, size, type)}."""
    stored: dict[str, tuple[str, int, str]] = {}
    for name, (data, content_type) in (artifacts or {}).items():
        safe = unique_name(safe_artifact_name(name), stored)
        stored[safe] = (_store_artifact(data), len(data), (content_type or "application/octet-stream")[:100])
    return stored


def _partial_bulk_create(
    *, run_id: int, state: str, stored: dict[str, tuple[str, int, str]], series: list[dict[str, Any]] | None
) -> None:
    """The run's artifacts (marked with the run's state) and curves, one INSERT each."""
    from registry.reproductions.models import RunSeries

    if stored:
        Artifact.objects.bulk_create(
            [
                Artifact(run_id=run_id, name=name, sha256=digest, size=size, content_type=ct, run_state=state)
                for name, (digest, size, ct) in stored.items()
            ]
        )
    if series:
        RunSeries.objects.bulk_create(
            [
                RunSeries(run_id=run_id, arm=item["arm"], name=item["name"], steps=list(item["steps"]),
                          values=list(item["values"]), logged=int(item.get("logged") or len(item["steps"])))
                for item in series
            ]
        )


def run_keep_partial(
    *, run_id: int, token: uuid.UUID | None, artifacts: dict[str, tuple[bytes, str]] | None,
    series: list[dict[str, Any]] | None,
) -> bool:
    """Keep what a cancelled run left (artifacts marked ``run_state="cancelled"``, curves so far):
    only by the worker holding the run's claim, once the run is cancelled, and only once."""
    from registry.reproductions.models import RunSeries

    if not artifacts and not series:
        return False
    stored = _artifact_files(artifacts)
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id, claim_token=token, state=State.CANCELLED).first()
        if run is None or Artifact.objects.filter(run_id=run_id).exists() or RunSeries.objects.filter(
            run_id=run_id
        ).exists():
            return False
        _partial_bulk_create(run_id=run_id, state=State.CANCELLED, stored=stored, series=series)
    return True


def run_fail(
    *,
    run_id: int,
    token: uuid.UUID | None,
    state: str = State.FAILED,
    error: str,
    traceback: str = "",
    logs: str = "",
    environment: dict[str, Any] | None = None,
    artifacts: dict[str, tuple[bytes, str]] | None = None,
    series: list[dict[str, Any]] | None = None,
) -> bool:
    """Record a failed or timed-out run; what it left (artifacts, marked with ``state``; its curves
    so far) is kept in the same transaction."""
    stored = _artifact_files(artifacts)
    fields: dict[str, Any] = {
        "finished_at": timezone.now(),
        "error": storable_text(error)[:10_000],
        "traceback": storable_text(traceback)[-MAX_LOG_CHARS:],
        "progress_message": state,
    }
    if logs:
        fields["logs"] = storable_text(logs)[-MAX_LOG_CHARS:]
    if environment:
        fields["environment"] = environment
    with transaction.atomic():
        if not run_transition(run_id=run_id, to_state=state, token=token, **fields):
            return False
        _partial_bulk_create(run_id=run_id, state=state, stored=stored, series=series)
        _after_run_finished(run_event_emit("run.finished", run_id, error=storable_text(error)[:500]))
    return True


def run_cancel(*, run: Run, user: Any) -> bool:
    from registry.findings.services import _ensure_can_edit

    experiment = run.reproduction.experiment
    if run.reproduction.requested_by_id != getattr(user, "pk", None):
        _ensure_can_edit(experiment.finding, user)
    if run.state in TERMINAL_STATES:
        raise ApplicationError(f"the run is already {run.state}", field="state", status=409)
    with transaction.atomic():
        if not run_transition(run_id=run.pk, to_state=State.CANCELLED, finished_at=timezone.now()):
            raise ApplicationError("the run finished meanwhile", field="state", status=409)
        run_event_emit("run.finished", run.pk)
    return True


def _after_run_finished(run: Run) -> None:
    """Refresh the stale flag and request the finding's effects recompute (the worker runs it
    after this transaction commits). A savepoint: a bug in the stale check must not lose the run's
    result; the recompute request itself is part of the transaction."""
    from registry.reproductions.versions import finding_refresh_stale

    finding_id = run.reproduction.experiment.finding_id
    effects_recompute_request(finding_id=finding_id)  # before the finding row is updated (lock order)
    if not _may_move_stale_flag(run):
        return
    try:
        with transaction.atomic():
            finding_refresh_stale(finding_id=finding_id)
    except Exception:
        logger.exception("stale check failed for run %s", run.pk)


def _may_move_stale_flag(run: Run) -> bool:
    """Whether this finished run can change the finding's stale flag (which scans the finding's
    runs): only a succeeded registry run can, and then only if the finding is stale (it may clear
    it) or the run used another plugin version than the installed one (it may set it). The common
    case, a current run of a finding that is not stale, costs no query beyond this one."""
    from registry.reproductions.versions import installed_versions

    if run.state != State.SUCCEEDED or run.reproduction.source != Reproduction.Source.REGISTRY:
        return False
    experiment = run.reproduction.experiment
    if run.plugin_version != installed_versions().get(experiment.plugin):
        return True
    return Finding.objects.filter(pk=experiment.finding_id, effects_stale=True).exists()


# ---------------------------------------------------------------- the reaper


def runs_reap(*, now: Any = None) -> dict[str, int]:
    """Repair what dead workers and lost messages leave behind.

    - running, heartbeat older than RUN_HEARTBEAT_TIMEOUT_S: requeued (or failed after max attempts);
    - running past its experiment's time limit plus grace: timed_out;
    - queued and its message lost (see ``_runs_to_redispatch``): dispatched again.

    Requeued runs are dispatched in the same pass: a run whose worker died runs again within
    about RUN_HEARTBEAT_TIMEOUT_S + REAPER_INTERVAL_S of the death.

    Staleness is measured from the reaper's own last contact with the database too (its clock,
    ``reaper_clock_advance``): after a gap in its passes (the database or the broker was down),
    a run that was alive at its last successful pass gets RUN_HEARTBEAT_TIMEOUT_S from the
    reaper's resumption to send a heartbeat, since its worker could not write one either.
    """
    from worker import broker

    now = now or timezone.now()
    counts = {"requeued": 0, "failed": 0, "timed_out": 0, "redispatched": 0, "dead_by_liveness": 0}
    timeout = float(settings.RUN_HEARTBEAT_TIMEOUT_S)
    stale_before = now - timedelta(seconds=timeout)
    dead_after = float(settings.RUN_DEAD_AFTER_S)
    dead_before = (
        now - timedelta(seconds=dead_after)
        if settings.RUN_LIVENESS_LOCKS and 0 < dead_after < timeout and connection.vendor == "postgresql"
        else None
    )
    clock = reaper_clock_advance(
        broker.reaper_clock_load(), now.timestamp(), interval=float(settings.REAPER_INTERVAL_S), timeout=timeout
    )
    if clock.get("resumed_at") is not None and clock["resumed_at"] == now.timestamp():
        logger.warning("the reaper's previous successful pass was %.0f s ago: runs alive then get %.0f s "
                       "to send a heartbeat", now.timestamp() - clock["blind_from"], timeout)
    running = Run.objects.filter(state=State.RUNNING).select_related("reproduction__experiment")
    for run in running:
        # The worker itself stops the run at its limit; the reaper only steps in once the worker's
        # stop, kill grace and result-save retries have all had their time (a batch's: all its runs').
        limit = run.reproduction.experiment.time_limit_s * max(1, run.batch_size)
        if run.started_at and run.started_at + timedelta(
            seconds=run_backstop_s(run.reproduction.experiment.time_limit_s, run.batch_size)
        ) < now:
            if run_fail(
                run_id=run.pk, token=run.claim_token, state=State.TIMED_OUT,
                error=f"exceeded the time limit of {limit} s",
            ):
                counts["timed_out"] += 1
            continue
        heartbeat = heartbeat_effective(run.heartbeat_at.timestamp() if run.heartbeat_at else None, clock,
                                        timeout=timeout)
        cutoff = stale_before
        if heartbeat is not None and heartbeat >= stale_before.timestamp():
            # Not stale yet; but a late heartbeat whose liveness lock is free means the worker died
            # (worker/liveness.py): checked below, inside the transaction that requeues it.
            if not (dead_before is not None and heartbeat < dead_before.timestamp()):
                continue
            cutoff = dead_before
        alive_unless_lock_free = cutoff is not stale_before
        if run.attempts >= settings.RUN_MAX_ATTEMPTS:
            # The heartbeat is re-checked in the UPDATE itself (as for the requeue below): one that
            # arrived since the read above means the run is alive, and it must not be failed.
            error = storable_text(f"worker lost {run.attempts} times (last on {run.worker_host}); giving up")
            with transaction.atomic():
                if alive_unless_lock_free and not _liveness_lock_free(run.pk):
                    continue
                if run_transition(
                    run_id=run.pk, to_state=State.FAILED, token=run.claim_token,
                    only_if=Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff),
                    finished_at=timezone.now(), error=error, traceback="", progress_message=State.FAILED,
                ):
                    _after_run_finished(run_event_emit("run.finished", run.pk, error=error[:500]))
                    counts["failed"] += 1
            continue
        with transaction.atomic():
            if alive_unless_lock_free and not _liveness_lock_free(run.pk):
                continue
            if run_transition(
                run_id=run.pk, to_state=State.QUEUED, token=run.claim_token,
                only_if=Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff),
                claim_token=None, dispatched_at=None, progress=0.0,
                progress_message=f"requeued: worker {run.worker_host} stopped answering",
            ):
                counts["requeued"] += 1
                if alive_unless_lock_free:
                    counts["dead_by_liveness"] += 1
                run_event_emit("run.requeued", run.pk, worker=run.worker_host)
    lost_ids = _runs_to_redispatch(now)
    if lost_ids:
        # runs claimed before (their worker died, or they were requeued) first, then lost messages
        claimed_before = set(
            Run.objects.filter(pk__in=lost_ids, started_at__isnull=False).values_list("pk", flat=True)
        )
        runs_dispatch([pk for pk in lost_ids if pk in claimed_before], front=True)
        runs_dispatch([pk for pk in lost_ids if pk not in claimed_before], resent=True)
        counts["redispatched"] = len(lost_ids)
    clock["last_success"] = max(now.timestamp(), clock.get("last_success") or 0.0)
    broker.reaper_clock_save(clock)  # only after a pass that reached the database throughout
    return counts


def _liveness_lock_free(run_id: int) -> bool:
    """Inside the reaper's transaction: no worker holds the run's liveness lock (it died)."""
    from worker.liveness import liveness_lock_free

    with connection.cursor() as cursor:
        return liveness_lock_free(cursor, run_id)


def reaper_clock_advance(
    clock: dict[str, Any] | None, now: float, *, interval: float, timeout: float
) -> dict[str, Any]:
    """The reaper's clock at the start of a pass at ``now`` (epoch seconds); pure.

    ``clock`` holds ``last_success`` (the end of the last pass that reached the database), and
    while a blind spell's effect lasts, ``blind_from`` (the last success before it) and
    ``resumed_at`` (the first pass after it). A pass more than 3 x ``interval`` after the last
    success follows a blind spell: the reaper (and so, likely, every worker) could not reach the
    database or was not triggered. The spell's effect ends ``timeout`` after the resumption.
    """
    clock = dict(clock or {})
    last = clock.get("last_success")
    if last is not None and now - last > 3 * interval:
        clock["blind_from"], clock["resumed_at"] = last, now
    elif clock.get("resumed_at") is not None and now - clock["resumed_at"] >= timeout:
        clock["blind_from"] = clock["resumed_at"] = None
    return clock


def heartbeat_effective(heartbeat_at: float | None, clock: dict[str, Any] | None, *, timeout: float) -> float | None:
    """The time a run's staleness is measured from (epoch seconds); pure. Its heartbeat, except
    for a run that was not yet stale at the reaper's last success before a blind spell (heartbeat
    newer than ``blind_from - timeout``): max(heartbeat, resumed_at): its worker gets ``timeout``
    from the reaper's resumption to show it is alive."""
    if heartbeat_at is None or not clock or clock.get("resumed_at") is None or clock.get("blind_from") is None:
        return heartbeat_at
    if heartbeat_at >= clock["blind_from"] - timeout:
        return max(heartbeat_at, clock["resumed_at"])
    return heartbeat_at


def _runs_to_redispatch(now: Any) -> list[int]:
    """Queued runs whose message is lost: never sent (the publish failed), or sent at least
    RUN_REDISPATCH_AFTER_S ago and no longer in the broker.

    With Redis the broker is asked (``worker.broker.run_messages_present``): each send has the task
    id ``run-<id>-<random>``, and the run's message counts as present when it waits in its queue
    (a bounded LRANGE) or was delivered to a worker within RUN_REDISPATCH_AFTER_S and is not yet
    acknowledged (kombu's ``unacked`` hash, by delivery time). So a long queue is never flooded with
    duplicates, and a message lost in a broker restart, dropped by a worker or stranded with a
    killed worker is re-sent within RUN_REDISPATCH_AFTER_S + REAPER_INTERVAL_S. A message moving
    from the queue to a worker during the scan may be missed: the duplicate that follows is
    harmless (``run_claim`` lets one message win).

    A queue too long to scan counts as holding all its runs' messages: only never-sent runs are
    sent to it. Without an answer (another broker, an unreachable one), the old rule applies:
    re-send runs whose queue a live worker consumes, waiting at least as long as the run had
    waited at its last send (the wait doubles with each re-send).

    A never-sent run (no ``dispatched_at``) created less than RUN_DISPATCH_GRACE_S ago is being
    sent by its creator (``runs_dispatch`` stamps it after the publish): not lost yet. A requeued
    run (claimed before: ``started_at`` set) is sent at once.
    """
    from worker import broker

    minimum = timedelta(seconds=settings.RUN_REDISPATCH_AFTER_S)
    grace = timedelta(seconds=settings.RUN_DISPATCH_GRACE_S)
    queued = Run.objects.filter(state=State.QUEUED).filter(
        Q(dispatched_at__isnull=True, started_at__isnull=False)
        | Q(dispatched_at__isnull=True, created_at__lte=now - grace)
        | Q(dispatched_at__lt=now - minimum)
    )
    rows = list(queued.order_by("pk").values_list("pk", "queue", "created_at", "dispatched_at")[:5000])
    lost = [run_id for run_id, _, _, dispatched_at in rows if dispatched_at is None]
    sent = [(run_id, queue, created_at, dispatched_at) for run_id, queue, created_at, dispatched_at in rows
            if dispatched_at is not None]
    if not sent:
        return lost
    present = broker.run_messages_present(
        [(run_id, queue) for run_id, queue, _, _ in sent], delivered_within_s=settings.RUN_REDISPATCH_AFTER_S
    )
    if present is not None:
        return lost + [run_id for run_id, _, _, _ in sent if run_id not in present]
    since = now - timedelta(seconds=settings.GPU_WORKER_SEEN_WINDOW_S)
    consumed = {q for worker in WorkerPresence.objects.filter(last_seen__gte=since) for q in worker.queues}
    for run_id, queue, created_at, dispatched_at in sent:
        if queue in consumed and now - dispatched_at > max(minimum, dispatched_at - created_at):
            lost.append(run_id)
    return lost


def worker_presence_record(*, hostname: str, queues: list[str], hardware: str) -> None:
    WorkerPresence.objects.update_or_create(
        hostname=hostname, defaults={"queues": queues, "hardware": hardware, "last_seen": timezone.now()}
    )
