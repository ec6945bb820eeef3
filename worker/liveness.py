"""A run's liveness lock: how the reaper learns within seconds that a worker died.

While a worker executes a run, it holds a PostgreSQL session-level advisory lock keyed on the run
(``pg_try_advisory_lock(LIVENESS_LOCK_CLASS, run id)``) on a connection of its own. When the worker
process dies (SIGKILL, OOM killer, a crash), its connections close and PostgreSQL releases the lock
at once. The reaper (``registry.reproductions.services.runs_reap``) treats a running run whose
heartbeat is a little late (RUN_DEAD_AFTER_S) *and* whose lock it can take as dead, instead of
waiting the full RUN_HEARTBEAT_TIMEOUT_S.

The lock only ever shortens the wait for a worker that is certainly gone: a worker cut off from the
database by the network keeps its session (and so its lock) on the server until TCP gives up, and
then the heartbeat timeout decides as before. A lost lock connection (a database restart) is
re-opened at the next heartbeat; until then the run is judged by its heartbeat (and the reaper's
post-outage grace), never by the lock alone. Only on PostgreSQL; elsewhere it does nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.db import connections

logger = logging.getLogger(__name__)

#: The first key of the two-key advisory locks of run liveness (the effects recompute uses its own
#: class; two-key locks never collide with one-key locks).
LIVENESS_LOCK_CLASS = 0x52554E  # "RUN"
CONNECT_TIMEOUT_S = 2


def liveness_key(run_id: int) -> tuple[int, int]:
    return LIVENESS_LOCK_CLASS, int(run_id) & 0x7FFFFFFF


def liveness_supported(alias: str = "default") -> bool:
    return connections[alias].vendor == "postgresql"


_local = threading.local()
#: Keep the thread's connection between runs (set in Celery workers, worker/celery.py).
KEEP_CONNECTION = False


def _shared_connection(alias: str) -> Any:
    """This thread's liveness connection, opened on first use and kept (a connection per run would
    cost a connect per run); None when the database cannot be reached now."""
    connection = getattr(_local, "connection", None)
    if connection is not None and not connection.closed and not connection.broken:
        return connection
    _local.connection = None
    if connection is not None:
        _close_quietly(connection)
    import psycopg

    params = dict(connections[alias].get_connection_params())
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.update(connect_timeout=CONNECT_TIMEOUT_S, autocommit=True, application_name="registry-run-liveness")
    _local.connection = psycopg.connect(**params)
    return _local.connection


def _close_quietly(connection: Any) -> None:
    try:
        connection.close()  # closing the session releases every lock it held
    except Exception:  # noqa: BLE001
        pass


class LivenessLock:
    """Holds a run's liveness lock for as long as the run executes, on a connection of the
    worker thread's own (not Django's, which is closed and reopened around database errors)."""

    def __init__(self, run_id: int, *, alias: str = "default") -> None:
        self.run_id = run_id
        self.alias = alias
        self._connection: Any = None
        self.held = False

    def acquire(self) -> bool:
        """Take the lock (connecting if needed); never raises, never blocks for long."""
        if self.held and self._connection is not None and not self._connection.closed \
                and not self._connection.broken:
            return True
        self.held = False
        if not liveness_supported(self.alias):
            return False
        try:
            self._connection = _shared_connection(self.alias)
            row = self._connection.execute("SELECT pg_try_advisory_lock(%s, %s)", liveness_key(self.run_id)).fetchone()
            self.held = bool(row and row[0])
        except Exception:  # noqa: BLE001 - the heartbeat decides while the lock is unavailable
            logger.debug("run %s: liveness lock unavailable", self.run_id, exc_info=True)
            if self._connection is not None:
                _close_quietly(self._connection)
            self._connection = None
        return self.held

    def refresh(self) -> bool:
        """Called at each heartbeat: re-takes the lock after its connection was lost."""
        return self.acquire()

    def release(self) -> None:
        connection, self._connection, held, self.held = self._connection, None, self.held, False
        if connection is None:
            return
        if not KEEP_CONNECTION:
            _local.connection = None
            _close_quietly(connection)
            return
        if not held:
            return
        try:
            connection.execute("SELECT pg_advisory_unlock(%s, %s)", liveness_key(self.run_id))
        except Exception:  # noqa: BLE001 - a lock we cannot release must not outlive us: drop the session
            _close_quietly(connection)

    def __enter__(self) -> LivenessLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def liveness_lock_free(cursor: Any, run_id: int) -> bool:
    """Inside a transaction: True when no session holds the run's liveness lock (its worker is
    gone). Takes the lock for the rest of the transaction, so a worker cannot take it meanwhile."""
    cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", liveness_key(run_id))
    row = cursor.fetchone()
    return bool(row and row[0])
