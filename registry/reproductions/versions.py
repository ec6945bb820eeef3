"""Plugin versions: findings whose effects come from an older plugin version are marked stale, and
can be reproduced again with the installed version (and the stale results' seeds) in one call.

The check runs every STALE_CHECK_INTERVAL_S (the beat), and once when a web server or a worker
starts (``stale_check_at_startup``): an upgrade is noticed at once, not up to an interval later.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from packaging.version import InvalidVersion, Version

from plugins.registry import all_plugins
from registry.effects.models import FindingEffects
from registry.effects.services import effects_recompute_request
from registry.errors import ApplicationError
from registry.events.services import event_emit
from registry.findings.models import Finding
from registry.reproductions.models import Experiment, Reproduction, Run
from registry.reproductions.services import reproduction_request

logger = logging.getLogger(__name__)


def installed_versions() -> dict[str, str]:
    return {name: entry.experiment.version for name, entry in all_plugins().items() if entry.available}


def _is_newer(version: str, than: str) -> bool:
    """Whether ``version`` is a later release than ``than`` (PEP 440); False when either is not a
    version number (then only equality counts)."""
    try:
        return Version(version) > Version(than)
    except InvalidVersion:
        return False


def _done_runs(experiment: Experiment) -> Any:
    return Run.objects.filter(
        reproduction__experiment=experiment,
        reproduction__source=Reproduction.Source.REGISTRY,
        state=Run.State.SUCCEEDED,
    )


def experiment_is_stale(experiment: Experiment, installed: str | None) -> bool:
    """Registry results exist, none from the installed version, none from a later one (a process
    with an older plugin, say an old worker at its start, does not mark newer results stale)."""
    if not installed:
        return False
    return _stale_from_versions(set(_done_runs(experiment).values_list("plugin_version", flat=True).distinct()),
                                installed)


def finding_is_stale(*, finding: Finding, versions: dict[str, str] | None = None) -> bool:
    """Stale: some experiment (not retracted) has registry results, none of them from the installed
    plugin version (nor a later one)."""
    versions = versions if versions is not None else installed_versions()
    return any(
        experiment_is_stale(experiment, versions.get(experiment.plugin))
        for experiment in finding.experiments.filter(retracted_at__isnull=True)
    )


def _stale_from_versions(done: set[str], installed: str | None) -> bool:
    """``experiment_is_stale`` on the versions its registry results were computed with."""
    if not installed:
        return False
    return bool(done) and installed not in done and not any(_is_newer(v, installed) for v in done)


def findings_mark_stale() -> list[int]:
    """Refresh every finding's ``effects_stale`` flag; returns the findings that became stale.

    Reads in four queries whatever the number of findings (it runs at every worker and web server
    start); writes only for the findings whose flag or cached effects must change."""
    versions = installed_versions()
    newly_stale = []
    # every experiment of a finding (retracted ones count for the effects' plugin versions, not for staleness)
    experiments: dict[int, list[tuple[int, str, bool]]] = {}
    for pk, finding_id, plugin, retracted_at in Experiment.objects.values_list(
            "pk", "finding_id", "plugin", "retracted_at"):
        experiments.setdefault(finding_id, []).append((pk, plugin, retracted_at is not None))
    done: dict[int, set[str]] = {}
    for experiment_id, version in Run.objects.filter(
            reproduction__source=Reproduction.Source.REGISTRY, state=Run.State.SUCCEEDED,
    ).order_by().values_list("reproduction__experiment_id", "plugin_version").distinct():  # no id in DISTINCT
        done.setdefault(experiment_id, set()).add(version)
    # whole tables, filtered here: an IN list of every finding overflows SQLite's bound parameters
    computed_with = {finding_id: versions_used for finding_id, versions_used in FindingEffects.objects.values_list(
        "finding_id", "data__plugin_versions") if finding_id in experiments}
    flags = {pk: stale for pk, stale in Finding.objects.values_list("pk", "effects_stale") if pk in experiments}
    for finding_id in sorted(flags):
        finding_experiments = experiments[finding_id]
        stale = any(_stale_from_versions(done.get(pk, set()), versions.get(plugin))
                    for pk, plugin, retracted in finding_experiments if not retracted)
        # The installed plugin's declarations (metric versions, scales, axes) feed the effects: a
        # version other than the one the cached effects were computed with asks for a recompute.
        installed_for_finding = {plugin: versions.get(plugin) for _, plugin, _ in finding_experiments}
        cached = computed_with.get(finding_id)
        upgraded = cached is not None and cached != installed_for_finding
        if stale == flags[finding_id] and not upgraded:
            continue
        with transaction.atomic():
            effects_recompute_request(finding_id=finding_id)
            if stale == flags[finding_id]:
                continue
            # compare-and-set: of two checks at once (several processes starting), one changes the
            # flag and emits the event
            if not Finding.objects.filter(pk=finding_id, effects_stale=not stale).update(effects_stale=stale):
                continue
            if stale:
                newly_stale.append(finding_id)
                event_emit(
                    type="finding.stale",
                    finding_id=finding_id,
                    payload={"finding": finding_id, "installed_versions": installed_for_finding},
                )
        if stale and settings.REREPRODUCE_ON_PLUGIN_UPGRADE:
            finding = Finding.objects.select_related("created_by").get(pk=finding_id)
            try:
                finding_rereproduce(finding=finding, user=finding.created_by)
            except ApplicationError as exc:  # the author's quota is full, an experiment's version constraint
                # excludes the installed version...: the finding stays marked stale, the others are checked
                logger.warning("finding %s not re-reproduced: %s", finding.pk, exc.message)
    return newly_stale


def original_seeds(experiment: Experiment, installed: str | None) -> list[int] | None:
    """The seeds to reproduce an experiment again with: those of its registry reproductions whose
    results are stale (succeeded with an older version than ``installed``, as ``experiment_is_stale``
    counts them), else of all its registry reproductions that succeeded; in request order, each
    once, at most MAX_SEEDS_PER_REPRODUCTION. None when it has none (then the default count)."""
    done = _done_runs(experiment)
    versions = set(done.values_list("plugin_version", flat=True).distinct())
    older = {v for v in versions if installed and v != installed and not _is_newer(v, installed)}
    stale = done.filter(plugin_version__in=older)
    ids = set(stale.values_list("reproduction_id", flat=True)) or set(done.values_list("reproduction_id", flat=True))
    seeds: list[int] = []
    for reproduction_seeds in Reproduction.objects.filter(pk__in=ids).order_by("pk").values_list("seeds", flat=True):
        seeds.extend(s for s in reproduction_seeds if s not in seeds)
    return seeds[: settings.MAX_SEEDS_PER_REPRODUCTION] or None


@transaction.atomic
def finding_rereproduce(*, finding: Finding, user: Any) -> list[Reproduction]:
    """Request a new reproduction of every experiment of the finding that is not retracted, with
    the seeds of its stale reproductions (``original_seeds``): the same seeds, the new version."""
    from registry.findings.services import _ensure_can_edit

    if user != finding.created_by:
        _ensure_can_edit(finding, user)
    versions = installed_versions()
    experiments = Experiment.objects.filter(finding=finding, retracted_at__isnull=True)
    return [
        reproduction_request(
            experiment=experiment, user=user, seeds=original_seeds(experiment, versions.get(experiment.plugin))
        )
        for experiment in experiments
    ]


def finding_refresh_stale(*, finding_id: int) -> None:
    """After a run finishes: the flag clears once results from the installed version exist."""
    finding = Finding.objects.get(pk=finding_id)
    stale = finding_is_stale(finding=finding)
    if stale != finding.effects_stale:
        Finding.objects.filter(pk=finding_id).update(effects_stale=stale)


def _migrations_pending(alias: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether the database lacks tables or columns the code expects (a fresh or an older database:
    ``migrate`` has yet to run). Reads only."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[alias])
    return bool(executor.migration_plan(executor.loader.graph.leaf_nodes()))


def stale_check_at_startup(*, where: str) -> list[int] | None:
    """Check staleness once, as a web server or a worker starts (``where`` names it in the log).
    Never raises: a database that is not migrated yet (``manage.py migrate`` on an empty
    database imports the same code), unreachable or failing only skips the check, logged; the beat
    checks again every STALE_CHECK_INTERVAL_S. Returns the findings that became stale, None when
    skipped."""
    if not settings.STALE_CHECK_ON_STARTUP:
        return None
    try:
        if _migrations_pending():
            logger.info("%s start: stale check skipped, the database has migrations to apply", where)
            return None
        newly_stale = findings_mark_stale()
    except Exception:  # noqa: BLE001 - a start-up must not fail on it
        logger.warning("%s start: stale check failed; the periodic check will retry", where, exc_info=True)
        return None
    if newly_stale:
        logger.info("%s start: %d finding(s) became stale: %s", where, len(newly_stale), newly_stale)
    return newly_stale


def import_plugins_in_this_thread() -> None:
    """Import the plugins (torch) before a background thread would: scipy looks torch up in
    ``sys.modules`` without importing it, and a torch half-imported by another thread made the
    server's first scipy import fail ("partially initialized module 'torch'")."""
    from plugins.registry import all_plugins

    try:
        all_plugins()
    except Exception:  # noqa: BLE001 - a broken plugin is reported by the registry, not here
        logger.warning("could not import the plugins before the stale check", exc_info=True)


def stale_check_at_startup_in_background(*, where: str) -> threading.Thread | None:
    """``stale_check_at_startup`` in a daemon thread (the server answers requests meanwhile), after
    the plugins are imported in this thread (a second or two of start-up: see
    :func:`import_plugins_in_this_thread`)."""
    if not settings.STALE_CHECK_ON_STARTUP:
        return None
    import_plugins_in_this_thread()

    def check() -> None:
        from registry.dbpool import connect_without_pool_in_this_thread

        try:
            connect_without_pool_in_this_thread()
            stale_check_at_startup(where=where)
        finally:
            connections.close_all()  # this thread's own connections

    thread = threading.Thread(target=check, name="stale-check", daemon=True)
    thread.start()
    return thread
