"""Thin Celery tasks: each receives an id and calls one function.

The periodic maintenance tasks take a short lease when the beat triggers them (``lease=True``): a
second beat process (or a beat restarted next to a live one) triggers them too, but only one
trigger per interval does the work. A manual trigger (no ``lease``) always works.
"""

import functools
import logging
from collections.abc import Callable
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import Error as DatabaseError
from django.db import InterfaceError, OperationalError

from registry.effects.services import effects_recompute_run, effects_recompute_sweep
from worker.runner import run_execute as execute

#: A failed recompute is retried this many times (with backoff) before it stays failed, visible
#: as ``FindingEffects.error`` and a ``finding.effects_failed`` event per attempt.
EFFECTS_RECOMPUTE_MAX_RETRIES = 3


logger = logging.getLogger(__name__)


def _database_down(exc: BaseException) -> bool:
    """An error meaning the database could not be reached (as opposed to a bug or bad data)."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DatabaseError) and isinstance(exc.__cause__, OperationalError | InterfaceError)
    )


@shared_task(
    bind=True, name="worker.run_execute", acks_late=True, reject_on_worker_lost=True, max_retries=None
)
def run_execute(self: Any, run_id: int) -> str:
    """Execute a run; a worker that cannot reach the database never acknowledges and drops the
    message: it is sent again (same task id) after RUN_DB_RETRY_S, until the database answers.
    (A claim made before the database went away is fenced by its token: the retry, or the reaper,
    takes the run over once its heartbeat is stale.)"""
    try:
        # Celery's soft limit for this message (runs_dispatch): the worker batches no more runs
        # with this one than it leaves time for
        _hard, soft = getattr(self.request, "timelimit", None) or (None, None)
        return execute(run_id, task_soft_limit_s=soft)
    except Exception as exc:
        if not _database_down(exc):
            raise
        logger.warning("run %s: the database is unreachable; the message is retried in %s s", run_id,
                       settings.RUN_DB_RETRY_S)
        from django.db import connection

        connection.close()
        raise self.retry(exc=exc, countdown=settings.RUN_DB_RETRY_S, max_retries=None) from exc


def _beat_task(name: str, interval_setting: str) -> Callable[[Callable[[], Any]], Callable[..., Any]]:
    """Wrap a periodic task: with ``lease=True`` (the beat's trigger) it runs only if it takes the
    lease ``name`` for 80 % of its interval (Redis SET NX PX on the broker; without Redis there is no
    lease: run a single beat)."""

    def decorate(function: Callable[[], Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(lease: bool = False) -> Any:
            from worker import broker

            if lease:
                if name == "runs_reap":
                    broker.beat_record()
                ttl = 0.8 * float(getattr(settings, interval_setting))
                if broker.lease_acquire(name, ttl) is False:
                    return {"skipped": "another beat's trigger holds the lease"}
            return function()

        return wrapper

    return decorate


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
@_beat_task("effects_sweep", "REAPER_INTERVAL_S")
def effects_sweep() -> list[int]:
    return effects_recompute_sweep()


@shared_task(name="worker.runs_reap", max_retries=0, ignore_result=True)
@_beat_task("runs_reap", "REAPER_INTERVAL_S")
def runs_reap() -> dict:
    from registry.reproductions.services import runs_reap as reap

    return reap()


@shared_task(name="worker.findings_mark_stale", max_retries=0, ignore_result=True)
@_beat_task("findings_mark_stale", "STALE_CHECK_INTERVAL_S")
def findings_mark_stale() -> list[int]:
    from registry.reproductions.versions import findings_mark_stale as mark

    return mark()


@shared_task(name="worker.webhooks_sweep", max_retries=0, ignore_result=True)
@_beat_task("webhooks_sweep", "WEBHOOKS_SWEEP_INTERVAL_S")
def webhooks_sweep() -> dict:
    from registry.events.services import webhooks_sweep as sweep

    return sweep()


@shared_task(name="worker.idempotency_purge", max_retries=0, ignore_result=True)
@_beat_task("idempotency_purge", "IDEMPOTENCY_PURGE_INTERVAL_S")
def idempotency_purge() -> int:
    """Delete the idempotency keys older than IDEMPOTENCY_KEY_TTL_S."""
    from registry.idempotency.services import keys_purge_expired

    return keys_purge_expired()
