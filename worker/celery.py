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
from pathlib import Path

from celery import Celery
from celery.signals import (
    celeryd_after_setup,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry.settings.base")
# Celery runs Django's system checks as each worker starts: they import every view and URL (scipy,
# the dashboard...), a second of a replacement worker's start. ``manage.py migrate`` and the web
# run them; CELERY_SKIP_CHECKS="" brings them back in workers.
os.environ.setdefault("CELERY_SKIP_CHECKS", "1")

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


def _start_up_checks(where: str) -> None:
    """Record the installed plugins' metric declarations (GET /metrics/ only reads them), then mark
    the findings whose results come from an older plugin version than this worker's stale (the
    beat's periodic check stays). Never raises."""
    from django.db import connections

    from registry.reproductions.services import metric_catalogue_sync_installed
    from registry.reproductions.versions import stale_check_at_startup

    try:
        metric_catalogue_sync_installed()
    except Exception:  # noqa: BLE001 - a broken plugin or database must not stop the worker
        logging.getLogger(__name__).exception("could not sync the metric catalogue")
    finally:
        connections.close_all()  # this thread's own connections
    try:
        stale_check_at_startup(where=where)
    finally:
        connections.close_all()


def _start_up_checks_in_background(where: str) -> threading.Thread | None:
    from registry.reproductions.versions import import_plugins_in_this_thread

    import_plugins_in_this_thread()  # not concurrently with this thread's own imports (scipy)
    thread = threading.Thread(target=_start_up_checks, args=(where,), name="stale-check", daemon=True)
    thread.start()
    return thread


#: Whether this worker's pool processes are forked by the prefork pool (set in the main process):
#: then the first pool process runs the start-up checks, where the plugins are imported anyway,
#: and the main process never imports them (torch: seconds of a replacement worker's start).
_prefork_pool = False


@worker_ready.connect
def _check_stale_findings(sender=None, **kwargs) -> None:
    """Start-up checks (catalogue, stale findings) of a worker without a prefork pool (solo,
    threads), in the background; with a prefork pool its first pool process runs them."""
    if _prefork_pool and sender is not None:
        return
    try:
        _start_up_checks_in_background("worker")
    except Exception:  # noqa: BLE001 - never stops the worker
        logging.getLogger(__name__).exception("could not start the stale check")


@worker_ready.connect
def _report_presence(sender, **kwargs) -> None:
    queues = sorted(q.name for q in sender.task_consumer.queues)
    _PresenceReporter(sender.hostname, queues).start()


@worker_process_shutdown.connect
def _stop_zygote(**kwargs) -> None:
    """Stop this pool process's zygote (worker/zygote.py) with it; it would also exit by itself
    once the process is gone (its socket closes), but this removes its scratch directory too."""
    from worker.runner import cleanups_finish
    from worker.zygote import zygote_stop

    try:
        cleanups_finish()  # the scratch directories still being removed in the background
    except Exception:  # noqa: BLE001 - shutting down regardless
        logging.getLogger(__name__).exception("could not finish removing scratch directories")
    try:
        zygote_stop()
    except Exception:  # noqa: BLE001 - shutting down regardless
        logging.getLogger(__name__).exception("could not stop the zygote")


#: Whether this worker consumes the ``cpu`` queue (set in the main process before the pool forks).
_consumes_cpu = False


@celeryd_after_setup.connect
def _note_queues(sender, instance, **kwargs) -> None:
    global _consumes_cpu, _prefork_pool
    queues = instance.app.amqp.queues
    _consumes_cpu = "cpu" in queues.consume_from
    pool = instance.pool_cls
    _prefork_pool = "prefork" in (pool if isinstance(pool, str) else getattr(pool, "__module__", ""))


#: Celery's Django fixup closes the database connections around every task unless this is set:
#: then every this-many tasks only. A worker keeps its connection from run to run instead of
#: connecting (a new PostgreSQL backend, its catalogue caches cold) for each one; a connection that
#: died meanwhile is found by Django's health check (CONN_HEALTH_CHECKS) before it is used.
DB_REUSE_MAX_TASKS = 1000
#: A worker's connection is replaced after this long (Django's CONN_MAX_AGE, in workers only; the
#: web keeps 0, see registry/settings/base.py). DATABASE_CONN_MAX_AGE, when set, wins.
WORKER_CONN_MAX_AGE_S = 600
#: Workers' database sessions carry this name (pg_stat_activity.application_name).
WORKER_APPLICATION_NAME = "registry-worker"
app.conf["CELERY_DB_REUSE_MAX"] = DB_REUSE_MAX_TASKS
# A pool process imports the plugins (torch) before it reports up; Celery's 4 s default would kill
# a slow one on a cold, busy machine and start another that does the same.
app.conf.worker_proc_alive_timeout = 60


@task_prerun.connect
@task_postrun.connect
def _drop_broken_connections(sender=None, **kwargs) -> None:
    """What Django does around each request, and Celery's fixup skips while it reuses connections:
    a connection that saw an error and no longer answers (a database outage), or past its age, is
    closed, so that the next query reconnects. Without it a worker keeps a dead connection forever.
    Not for a task applied eagerly (in the caller's process, maybe inside its transaction)."""
    from django.db import connections

    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
            # a connection that sat idle through an outage saw no error: test it now, outside the
            # task's transactions (inside one a failed check cannot reconnect)
            connection.close_if_health_check_failed()


@celeryd_after_setup.connect
def _keep_liveness_connections(sender, instance, **kwargs) -> None:
    """In a worker, each pool process keeps its liveness connection from run to run (one connect per
    process, not per run); elsewhere (tests, run-local) it is closed with the run's lock. Its
    database connection is kept too (see DB_REUSE_MAX_TASKS)."""
    from django.conf import settings

    from worker import liveness

    liveness.KEEP_CONNECTION = True
    database = settings.DATABASES["default"]
    # No connection pool in a worker (DATABASE_POOL_MAX_SIZE is for the web server): each process keeps
    # one connection of its own, and a pool opened in the parent would be shared by its forks.
    database.get("OPTIONS", {}).pop("pool", None)
    if database.get("ENGINE", "").endswith("postgresql") and "DATABASE_CONN_MAX_AGE" not in os.environ:
        database["CONN_MAX_AGE"] = WORKER_CONN_MAX_AGE_S  # read at each connect (same dict as the wrappers')
    if database.get("ENGINE", "").endswith("postgresql"):
        database.setdefault("OPTIONS", {}).setdefault("application_name", WORKER_APPLICATION_NAME)


@worker_process_init.connect
def _start_pool_process(**kwargs) -> None:
    """A pool process starts its zygote first (its torch import runs while this process imports
    the plugins), imports the plugins (its first run needs them), and the first pool process runs
    the start-up checks in the background."""
    _prestart_zygote()
    from plugins.registry import all_plugins

    try:
        all_plugins()
    except Exception:  # noqa: BLE001 - each run reports its plugin's problem
        logging.getLogger(__name__).exception("could not import the plugins")
    from billiard.process import current_process

    if getattr(current_process(), "index", None) == 0:  # the solo pool's main process has none
        try:
            _start_up_checks_in_background("worker")
        except Exception:  # noqa: BLE001 - never stops the worker
            logging.getLogger(__name__).exception("could not start the stale check")


def _prestart_zygote() -> None:
    """A pool process of a CPU worker starts its zygote (worker/zygote.py) at once, in the
    background, so that its first run does not wait for torch to be imported. GPU-only workers
    start none (GPU runs always start a fresh interpreter)."""
    from django.conf import settings

    if settings.RUN_CHILD_START != "zygote" or not _consumes_cpu:
        return
    try:
        import tempfile

        from worker.runner import plugin_modules_declared
        from worker.sandbox import child_environment
        from worker.zygote import zygote_for

        # the runs' environment but for HOME/TMPDIR (which do not count: see zygote.env_signature)
        env = child_environment(Path(tempfile.gettempdir()), extra=list(settings.RUN_ENV_PASSTHROUGH))
        zygote_for(env, plugin_modules_declared())
    except Exception:  # noqa: BLE001 - the first run starts one, or starts fresh
        logging.getLogger(__name__).exception("could not start the zygote")
