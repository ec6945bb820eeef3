"""A bare Celery app for the dispatch comparison: one task that returns when it started.

Broker and result backend from BARE_CELERY_BROKER (Redis), keys under BARE_CELERY_PREFIX.
"""

import os
import time

from celery import Celery

_url = os.environ.get("BARE_CELERY_BROKER", "redis://127.0.0.1:6379/13")
_prefix = os.environ.get("BARE_CELERY_PREFIX", "bare:")
app = Celery("bare", broker=_url, backend=_url)
app.conf.update(
    broker_transport_options={"global_keyprefix": _prefix},
    result_backend_transport_options={"global_keyprefix": _prefix},
    result_expires=300,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bare.started")
def started() -> float:
    """The wall-clock time at which the worker started the task."""
    return time.time()
