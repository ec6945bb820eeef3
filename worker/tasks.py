"""Thin Celery tasks: each receives an id and calls one function."""

from celery import shared_task

from registry.effects.services import effects_recompute_run, effects_recompute_sweep
from worker.runner import run_execute as execute

#: A failed recompute is retried this many times (with backoff) before it stays failed, visible
#: as ``FindingEffects.error`` and a ``finding.effects_failed`` event per attempt.
EFFECTS_RECOMPUTE_MAX_RETRIES = 3


@shared_task(name="worker.run_execute", acks_late=True, reject_on_worker_lost=True, max_retries=0)
def run_execute(run_id: int) -> str:
    return execute(run_id)


@shared_task(
    name="worker.effects_recompute",
    acks_late=True,
    ignore_result=True,
    autoretry_for=(Exception,),
    max_retries=EFFECTS_RECOMPUTE_MAX_RETRIES,
    retry_backoff=10,
    retry_backoff_max=300,
)
def effects_recompute(finding_id: int) -> None:
    effects_recompute_run(finding_id=finding_id)


@shared_task(name="worker.effects_sweep", max_retries=0, ignore_result=True)
def effects_sweep() -> list[int]:
    return effects_recompute_sweep()


@shared_task(name="worker.runs_reap", max_retries=0, ignore_result=True)
def runs_reap() -> dict:
    from registry.reproductions.services import runs_reap as reap

    return reap()


@shared_task(name="worker.findings_mark_stale", max_retries=0, ignore_result=True)
def findings_mark_stale() -> list[int]:
    from registry.reproductions.versions import findings_mark_stale as mark

    return mark()


@shared_task(name="worker.webhooks_sweep", max_retries=0, ignore_result=True)
def webhooks_sweep() -> dict:
    from registry.events.services import webhooks_sweep as sweep

    return sweep()
