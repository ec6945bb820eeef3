"""Thin Celery tasks: each receives an id and calls one function."""

from celery import shared_task

from worker.runner import run_execute as execute


@shared_task(name="worker.run_execute", acks_late=True, reject_on_worker_lost=True, max_retries=0)
def run_execute(run_id: int) -> str:
    return execute(run_id)


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
