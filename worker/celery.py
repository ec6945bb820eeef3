"""The Celery app. Queues by resource: ``cpu`` and ``gpu``; JSON only; late acks.

Start a CPU worker:  celery -A worker worker -Q cpu --concurrency 2
Start a GPU worker:  celery -A worker worker -Q gpu --concurrency 1   (one per GPU)
Start the reaper:    celery -A worker beat
Maintenance tasks (reaper, sweeps, effects recomputes) run on the ``maintenance`` queue.
"""

import logging
import os
import threading
import time

from celery import Celery
from celery.signals import worker_ready
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry.settings.base")

app = Celery("registry")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_queues=[Queue("cpu"), Queue("gpu"), Queue("maintenance")],
    task_default_queue="cpu",
    task_routes={
        "worker.runs_reap": {"queue": "maintenance"},
        "worker.findings_mark_stale": {"queue": "maintenance"},
        "worker.webhooks_sweep": {"queue": "maintenance"},
        "worker.effects_recompute": {"queue": "maintenance"},
        "worker.effects_sweep": {"queue": "maintenance"},
        "worker.idempotency_purge": {"queue": "maintenance"},
    },
    broker_connection_retry_on_startup=True,
    # A publish to a frozen broker gives up within seconds (socket timeouts in the transport
    # options): callers log it and the reaper re-sends; a web request never hangs on the broker.
    task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2},
    worker_hijack_root_logger=False,
)


@app.on_after_finalize.connect
def _schedule_reaper(sender: Celery, **kwargs) -> None:
    from django.conf import settings

    # lease=True: a second beat's triggers find the lease taken and do nothing (worker/tasks.py);
    # expires: a trigger that waited longer than its interval is superseded by the next one.
    def beat(task: str, interval: float) -> object:
        return sender.signature(task, kwargs={"lease": True}, options={"expires": interval})

    sender.add_periodic_task(
        settings.REAPER_INTERVAL_S, beat("worker.runs_reap", settings.REAPER_INTERVAL_S), name="reap runs"
    )
    sender.add_periodic_task(
        settings.STALE_CHECK_INTERVAL_S,
        beat("worker.findings_mark_stale", settings.STALE_CHECK_INTERVAL_S),
        name="mark stale findings",
    )
    sender.add_periodic_task(
        settings.WEBHOOKS_SWEEP_INTERVAL_S,
        beat("worker.webhooks_sweep", settings.WEBHOOKS_SWEEP_INTERVAL_S),
        name="sweep webhooks",
    )
    # Cheap (one query on pending recomputes): re-sends recomputes whose message the broker lost.
    sender.add_periodic_task(
        settings.REAPER_INTERVAL_S,
        beat("worker.effects_sweep", settings.REAPER_INTERVAL_S),
        name="resend lost effects recomputes",
    )
    sender.add_periodic_task(
        settings.IDEMPOTENCY_PURGE_INTERVAL_S,
        beat("worker.idempotency_purge", settings.IDEMPOTENCY_PURGE_INTERVAL_S),
        name="purge expired idempotency keys",
    )

app.conf.imports = ("worker.tasks",)



class _PresenceReporter(threading.Thread):
    """Tells the registry which queues this worker consumes (so a GPU request can say 'no GPU
    worker seen' instead of sitting silently in the queue)."""

    def __init__(self, hostname: str, queues: list[str]):
        super().__init__(daemon=True, name="presence")
        self.hostname, self.queues = hostname, queues

    def run(self) -> None:
        from django.db import connection

        from registry.reproductions.services import worker_presence_record

        hardware = "cpu"
        if "gpu" in self.queues:
            # Not through torch: initialising CUDA in the parent would break CUDA in forked children.
            from worker.runner import nvidia_smi_query

            hardware = nvidia_smi_query("name") or "cpu (no GPU found)"
        while True:
            try:
                worker_presence_record(hostname=self.hostname, queues=self.queues, hardware=hardware)
            except Exception:  # noqa: BLE001
                logging.getLogger(__name__).exception("could not record worker presence")
            finally:
                connection.close()
            time.sleep(60)


@worker_ready.connect
def _sync_metric_catalogue(sender, **kwargs) -> None:
    """Record the installed plugins' metric declarations (GET /metrics/ only reads them)."""
    from django.db import connection

    from registry.reproductions.services import metric_catalogue_sync_installed

    try:
        metric_catalogue_sync_installed()
    except Exception:  # noqa: BLE001 - a broken plugin or database must not stop the worker
        logging.getLogger(__name__).exception("could not sync the metric catalogue")
    finally:
        connection.close()


@worker_ready.connect
def _report_presence(sender, **kwargs) -> None:
    queues = sorted(q.name for q in sender.task_consumer.queues)
    _PresenceReporter(sender.hostname, queues).start()
