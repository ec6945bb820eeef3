"""The web server's PostgreSQL connection pool across a fork.

Django keeps one psycopg pool per process (``DatabaseWrapper._connection_pools``). A process forked
from one that had opened it inherits the pool's connections (sockets shared with the parent) but
not its threads; closing them would end the parent's sessions. The child forgets them instead,
keeping the objects referenced so that no finaliser closes them, and opens its own pool on its
first query.
"""

from __future__ import annotations

from typing import Any

_inherited: list[Any] = []


def forget_pools_after_fork() -> None:
    try:
        from django.db.backends.postgresql.base import DatabaseWrapper
    except Exception:  # psycopg missing: no PostgreSQL, no pool
        return
    from django.db import connections

    pools = DatabaseWrapper._connection_pools
    _inherited.extend(pools.values())
    pools.clear()
    for wrapper in connections.all(initialized_only=True):  # the forking thread's own, if any
        if wrapper.connection is not None:
            _inherited.append(wrapper.connection)
            wrapper.connection = None


def connect_without_pool_in_this_thread() -> None:
    """This thread's database connection bypasses the pool: for a one-off background job (the
    start-up stale check) in a process that may never serve a request with it (gunicorn's master
    under ``serve``), where a pool would keep idle connections and threads for the process's life."""
    from django.db import connections

    wrapper = connections["default"]
    options = wrapper.settings_dict.get("OPTIONS", {})
    if "pool" in options:
        wrapper.close()
        wrapper.settings_dict = {**wrapper.settings_dict, "OPTIONS": {k: v for k, v in options.items() if k != "pool"}}
