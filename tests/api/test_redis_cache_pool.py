"""Django's Redis cache shares one connection pool per process (registry/rediscache.py): under ASGI
each request gets a cache object of its own, and each used to open its own Redis connection."""

from __future__ import annotations

import secrets
import threading

import pytest
import redis
from django.conf import settings
from django.core.cache.backends.redis import RedisCache

from registry.settings.base import cache_from_url

pytestmark = pytest.mark.redis


def _connections_named(client: redis.Redis, name: str) -> int:
    return sum(1 for entry in client.client_list() if entry.get("name") == name)


def test_cache_objects_of_many_requests_share_one_connection():
    name = f"cachepooltest-{secrets.token_hex(4)}"
    config = cache_from_url(settings.CELERY_BROKER_URL)
    config["OPTIONS"]["client_name"] = name
    caches: list[RedisCache] = []

    def request() -> None:  # what Django does for each request context: a new cache object
        cache = RedisCache(config["LOCATION"], {**config, "KEY_PREFIX": name})
        cache.get("throttle-key")
        caches.append(cache)  # kept alive: a connection it opened would stay open

    threads = [threading.Thread(target=request) for _ in range(20)]
    for thread in threads:
        thread.start()
        thread.join()
    admin = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        assert _connections_named(admin, name) == 1
    finally:
        admin.close()
    pools = {id(cache._cache._get_connection_pool(False)) for cache in caches}
    assert len(pools) == 1
