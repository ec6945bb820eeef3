"""One Redis connection pool per process for Django's Redis cache.

Django makes a cache object per request context: under ASGI every request is a new context, so
every request built a new ``RedisCache``, with a new connection pool and a new TCP connection to
Redis (a connect and a handshake per request, for the throttles alone). Pools made through this
class are shared by every cache object of the process with the same server and options; redis-py
makes a forked child's pool start afresh (it checks the pid), and its pools are thread-safe.
"""

from __future__ import annotations

import threading
from typing import Any

import redis


class ProcessWideConnectionPool(redis.ConnectionPool):
    _shared: dict[tuple, redis.ConnectionPool] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> redis.ConnectionPool:
        key = (url, tuple(sorted((name, repr(value)) for name, value in kwargs.items())))
        with cls._lock:
            pool = cls._shared.get(key)
            if pool is None:
                pool = cls._shared[key] = super().from_url(url, **kwargs)
            return pool
