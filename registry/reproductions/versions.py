"""Plugin versions: findings whose effects come from an older plugin version are marked stale, and
can be reproduced again with the installed version in one call."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from plugins.registry import all_plugins
from registry.effects.models import FindingEffects
from registry.effects.services import effects_recompute_request
from registry.events.services import event_emit
from registry.findings.models import Finding
from registry.reproductions.models import Experiment, Reproduction, Run
from registry.reproductions.services import reproduction_request

logger = logging.getLogger(__name__)


def installed_versions() -> dict[str, str]:
    return {name: entry.experiment.version for name, entry in all_plugins().items() if entry.available}


def finding_is_stale(*, finding: Finding, versions: dict[str, str] | None = None) -> bool:
    """Stale: some experiment (not retracted) has registry results, none of them from the installed
    plugin version."""
    versions = versions if versions is not None else installed_versions()
    for experiment in finding.experiments.filter(retracted_at__isnull=True):
        installed = versions.get(experiment.plugin)
        done = Run.objects.filter(
            reproduction__experiment=experiment,
            reproduction__source=Reproduction.Source.REGISTRY,
            state=Run.State.SUCCEEDED,
        )
        if installed and done.exists() and not done.filter(plugin_version=installed).exists():
            return True
    return False


def findings_mark_stale() -> list[int]:
    """Refresh every finding's ``effects_stale`` flag; returns the findings that became stale."""
    versions = installed_versions()
    newly_stale = []
    computed_with = dict(
        FindingEffects.objects.filter(finding__experiments__isnull=False).values_list("finding_id", "data")
    )
    for finding in Finding.objects.filter(experiments__isnull=False).distinct():
        stale = finding_is_stale(finding=finding, versions=versions)
        # The installed plugin's declarations (metric versions, scales, axes) feed the effects: a
        # version other than the one the cached effects were computed with asks for a recompute.
        cached = (computed_with.get(finding.pk) or {}).get("plugin_versions")
        upgraded = cached is not None and cached != {
            e.plugin: versions.get(e.plugin) for e in finding.experiments.all()
        }
        if stale == finding.effects_stale and not upgraded:
            continue
        with transaction.atomic():
            effects_recompute_request(finding_id=finding.pk)
            if stale == finding.effects_stale:
                continue
            Finding.objects.filter(pk=finding.pk).update(effects_stale=stale)
            if stale:
                newly_stale.append(finding.pk)
                event_emit(
                    type="finding.stale",
                    finding_id=finding.pk,
                    payload={"finding": finding.pk, "installed_versions": {
                        e.plugin: versions.get(e.plugin) for e in finding.experiments.all()
                    }},
                )
        if stale and settings.REREPRODUCE_ON_PLUGIN_UPGRADE:
            from registry.reproductions.quotas import QuotaExceeded

            try:
                finding_rereproduce(finding=finding, user=finding.created_by)
            except QuotaExceeded as exc:  # the author's quota is full: the finding stays marked stale
                logger.warning("finding %s not re-reproduced: %s", finding.pk, exc.message)
    return newly_stale


@transaction.atomic
def finding_rereproduce(*, finding: Finding, user: Any) -> list[Reproduction]:
    """Request a new reproduction (default seeds) of every experiment of the finding that is not
    retracted."""
    from registry.findings.services import _ensure_can_edit

    if user != finding.created_by:
        _ensure_can_edit(finding, user)
    experiments = Experiment.objects.filter(finding=finding, retracted_at__isnull=True)
    return [reproduction_request(experiment=experiment, user=user) for experiment in experiments]


def finding_refresh_stale(*, finding_id: int) -> None:
    """After a run finishes: the flag clears once results from the installed version exist."""
    finding = Finding.objects.get(pk=finding_id)
    stale = finding_is_stale(finding=finding)
    if stale != finding.effects_stale:
        Finding.objects.filter(pk=finding_id).update(effects_stale=stale)
