from __future__ import annotations

from collections.abc import Callable
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


def reproduction_outcome(reproduction: Reproduction) -> str | None:
    """None while a run is active; once every run ended: "cancelled" when they all were,
    "failed" when none succeeded, else "succeeded" (at least one run has results)."""
    states = {run.state for run in reproduction.runs.all()}
    if not states or not states <= TERMINAL_STATES:
        return None
    if states == {Run.State.CANCELLED}:
        return "cancelled"
    if Run.State.SUCCEEDED not in states:
        return "failed"
    return "succeeded"


def _prefetched_runs(reproduction: Reproduction) -> list[Run] | None:
    """The reproduction's runs when they were prefetched (``prefetch_related("runs")``), else None."""
    cache = getattr(reproduction, "_prefetched_objects_cache", None) or {}
    runs = cache.get("runs")
    return None if runs is None else list(runs)


def gpu_availability() -> Callable[[], bool]:
    """Whether a GPU worker was seen recently, asked of the database at most once: for a list of
    reproductions (one answer per request, not one query per GPU reproduction)."""
    from registry.reproductions.services import gpu_worker_available

    answer: list[bool] = []

    def available() -> bool:
        if not answer:
            answer.append(gpu_worker_available())
        return answer[0]

    return available


def reproduction_waiting_for_gpu(
    reproduction: Reproduction, *, gpu_available: Callable[[], bool] | None = None
) -> bool:
    """A GPU reproduction with a queued run and no GPU worker seen recently. Reads the prefetched
    runs when there are some (no query), and asks ``gpu_available`` (see ``gpu_availability``)
    only when it matters; the same answer as ``services.reproduction_waiting_for_gpu``."""
    if reproduction.device != "gpu":
        return False
    runs = _prefetched_runs(reproduction)
    if runs is None:
        pending = reproduction.runs.filter(state=Run.State.QUEUED).exists()
    else:
        pending = any(run.state == Run.State.QUEUED for run in runs)
    if not pending:
        return False
    return not (gpu_available or gpu_availability())()


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
