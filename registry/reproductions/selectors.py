from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from registry.findings.selectors import finding_list
from registry.reproductions.models import TERMINAL_STATES, Experiment, Reproduction, Run


def reproduction_state(reproduction: Reproduction) -> str:
    """queued / running / finished (every run terminal) from its runs' states."""
    states = {run.state for run in reproduction.runs.all()}
    if states and states <= TERMINAL_STATES:
        return "finished"
    if Run.State.RUNNING in states or (states & TERMINAL_STATES):
        return "running"
    return "queued"


def experiment_list(*, user: Any) -> QuerySet[Experiment]:
    return Experiment.objects.filter(finding__in=finding_list(user=user)).prefetch_related("reproductions")


def reproduction_list(*, user: Any) -> QuerySet[Reproduction]:
    return (
        Reproduction.objects.filter(experiment__finding__in=finding_list(user=user))
        .select_related("experiment", "requested_by")
        .prefetch_related("runs")
    )


def run_list(*, user: Any) -> QuerySet[Run]:
    return (
        Run.objects.filter(reproduction__experiment__finding__in=finding_list(user=user))
        .select_related("reproduction__experiment")
        .prefetch_related("measurements", "artifacts")
    )
