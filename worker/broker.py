"""Direct, short-timeout access to a Redis broker: is a run's message still there, leases for the
periodic maintenance tasks, and the beat's "last seen" mark.

Every call here is bounded by ``BROKER_SOCKET_TIMEOUT_S`` and never raises for an unreachable
broker where a caller can do without it (see each function). Keys carry the same
``CELERY_BROKER_KEY_PREFIX`` as kombu's own (kombu prefixes every key with ``global_keyprefix``),
so a queue ``cpu`` is the Redis list ``<prefix>cpu``, and the messages delivered to workers but
not acknowledged are the hash ``<prefix>unacked`` (delivery tag -> message) indexed by the sorted
set ``<prefix>unacked_index`` (delivery tag -> time of delivery).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

#: A queue longer than this is not scanned: its runs are assumed to be in it (see
#: ``run_messages_present``): only never-sent runs are sent; a run whose message really was lost
#: is re-sent once its queue is short enough to be scanned again.
QUEUE_SCAN_LIMIT = 5000
BEAT_KEY = "beat:last"
REAPER_KEY = "reaper:clock"
REAPER_KEY_TTL_S = 24 * 3600

_client_lock = threading.Lock()
_client: Any = None


def is_redis() -> bool:
    return settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://", "unix://"))


def redis_client() -> Any:
    """A redis-py client on the broker with short socket timeouts (one per process)."""
    global _client
    with _client_lock:
        if _client is None:
            import redis

            timeout = settings.BROKER_SOCKET_TIMEOUT_S
            _client = redis.Redis.from_url(
                settings.CELERY_BROKER_URL, socket_timeout=timeout, socket_connect_timeout=timeout,
                health_check_interval=0,
            )
        return _client


def reset_client() -> None:
    """Forget the cached client (tests that point the broker elsewhere)."""
    global _client
    with _client_lock:
        _client = None


def _key(name: str) -> str:
    return f"{settings.CELERY_BROKER_KEY_PREFIX}{name}"


def run_task_id(run_id: int, dispatch: str) -> str:
    """The Celery task id of one dispatch of a run: ``run-<id>-<dispatch>``; findable in the broker."""
    return f"run-{run_id}-{dispatch}"


#: Run messages on Redis: kombu keeps one list per priority step (0 is served first). New runs go
#: to step 6; the reaper's re-sends (a requeued run whose worker died, a lost message) to step 0,
#: the front: they have waited already.
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_NEW = 6
PRIORITY_RESENT = 3  # a lost message sent again (a broker restart): ahead of new runs
PRIORITY_FRONT = 0  # a run whose worker died: ahead of everything, even a broker restart's re-sends


def _queue_keys(queue: str) -> list[str]:
    """The Redis lists of one queue, one per priority step (kombu's ``<queue>\x06\x16<step>``)."""
    return [_key(queue if step == 0 else f"{queue}\x06\x16{step}") for step in PRIORITY_STEPS]


def _marker(run_id: int) -> bytes:
    return f'"run-{run_id}-'.encode()


def run_messages_present(runs: list[tuple[int, str]], *, delivered_within_s: float) -> set[int] | None:
    """Which of ``runs`` (run id, queue) still have a message in the broker: waiting in their queue
    or delivered to a worker within the last ``delivered_within_s`` seconds and not acknowledged.

    A message delivered longer ago whose run is still queued sits with a worker that is not
    running it (a worker killed before claiming it: Redis would give it back only after the
    visibility timeout, hours later) and does not count.

    A queue longer than ``QUEUE_SCAN_LIMIT`` is not scanned: its runs count as present (re-sending
    them all would flood it). Returns None when the broker is not Redis or is unreachable: the
    caller cannot tell.
    """
    if not runs or not is_redis():
        return None
    try:
        client = redis_client()
        queues = sorted({queue for _, queue in runs})
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            for key in _queue_keys(queue):
                pipe.llen(key)
        lengths = pipe.execute()
        steps = len(PRIORITY_STEPS)
        too_long = {queue for i, queue in enumerate(queues)
                    if sum(lengths[i * steps:(i + 1) * steps]) > QUEUE_SCAN_LIMIT}
        if too_long:
            logger.warning("queues %s hold more than %d messages: not scanned, their runs assumed present",
                           ", ".join(sorted(too_long)), QUEUE_SCAN_LIMIT)
        keys = [key for queue in queues if queue not in too_long for key in _queue_keys(queue)]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.lrange(key, 0, -1)
        pipe.zrangebyscore(_key("unacked_index"), time.time() - delivered_within_s, "+inf")
        *queued, recent_tags = pipe.execute()
        delivered = client.hmget(_key("unacked"), recent_tags) if recent_tags else []
    except Exception:  # noqa: BLE001 - an unreachable broker: the caller falls back
        logger.warning("could not inspect the broker's queues", exc_info=True)
        return None
    messages = [m for batch in queued for m in batch] + [m for m in delivered if m]
    present = {run_id for run_id, queue in runs if queue in too_long}
    for run_id, queue in runs:
        if queue in too_long:
            continue
        marker = _marker(run_id)
        if any(marker in message for message in messages):
            present.add(run_id)
    return present


def lease_acquire(name: str, ttl_s: float) -> bool | None:
    """Take the lease ``name`` for ``ttl_s`` seconds (SET NX PX): True when taken, False when
    someone holds it, None when the broker is not Redis or unreachable (no lease to be had)."""
    if not is_redis():
        return None
    try:
        return bool(redis_client().set(_key(f"lease:{name}"), str(time.time()), nx=True, px=max(1, int(ttl_s * 1000))))
    except Exception:  # noqa: BLE001
        logger.warning("could not take the lease %s", name, exc_info=True)
        return None


def beat_record(now: float | None = None) -> None:
    """Record that the beat's periodic tasks ran now (read by /readyz)."""
    if not is_redis():
        return
    try:
        redis_client().set(_key(BEAT_KEY), json.dumps(now if now is not None else time.time()))
    except Exception:  # noqa: BLE001
        logger.warning("could not record the beat", exc_info=True)


def beat_last_seen() -> float | None:
    """When the beat last triggered the reaper (epoch seconds), None if never (or not Redis).
    Raises for an unreachable broker."""
    if not is_redis():
        return None
    value = redis_client().get(_key(BEAT_KEY))
    return float(value) if value is not None else None


def reaper_clock_load() -> dict[str, Any] | None:
    """The reaper's clock (see ``registry.reproductions.services.reaper_clock_advance``): on the
    Redis broker, else in Django's cache (shared in production). None when there is none yet or
    the store is unreachable (the reaper then goes by heartbeats alone)."""
    try:
        if is_redis():
            raw = redis_client().get(_key(REAPER_KEY))
            return json.loads(raw) if raw is not None else None
        from django.core.cache import cache

        value = cache.get(REAPER_KEY)
        return value if isinstance(value, dict) else None
    except Exception:  # noqa: BLE001
        logger.warning("could not read the reaper's clock", exc_info=True)
        return None


def reaper_clock_save(clock: dict[str, Any]) -> None:
    """Record the reaper's clock after a successful pass (never raises)."""
    try:
        if is_redis():
            redis_client().set(_key(REAPER_KEY), json.dumps(clock), ex=REAPER_KEY_TTL_S)
            return
        from django.core.cache import cache

        cache.set(REAPER_KEY, clock, timeout=REAPER_KEY_TTL_S)
    except Exception:  # noqa: BLE001
        logger.warning("could not record the reaper's clock", exc_info=True)


def reaper_clock_clear() -> None:
    """Forget the reaper's clock (tests)."""
    try:
        if is_redis():
            redis_client().delete(_key(REAPER_KEY))
        from django.core.cache import cache

        cache.delete(REAPER_KEY)
    except Exception:  # noqa: BLE001
        logger.warning("could not clear the reaper's clock", exc_info=True)
