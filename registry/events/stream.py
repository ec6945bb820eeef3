"""The live event stream (server-sent events), built so that open streams cost no worker.

Under ASGI every stream is an ``async`` generator on the server's event loop; an idle stream is a
coroutine waiting on an :class:`asyncio.Event`, not a thread. Database work stays bounded however
many streams are open:

* one **watcher** task per event loop (started lazily by the first stream, ended when the last one
  goes) polls :func:`events_head` about once a second (``STREAM_POLL_S``) and wakes the waiting
  streams when the head of the log moves;
* a woken stream reads its own next events with :func:`events_after` (``visible_to`` the reader:
  hidden events never appear, not even their ids);
* every query, the watcher's and the streams', runs on one small process-wide thread pool
  (``STREAM_DB_THREADS`` threads): at most that many database connections, whether 1 or 1000
  streams are open. Each pool thread keeps its connection between queries and recycles it as Django
  does around a request (``close_old_connections``: after an error, or once older than
  ``CONN_MAX_AGE``).

Open streams are capped per server process: ``STREAM_MAX_PER_CLIENT`` per client (the signed-in
user, else the remote address) and ``STREAM_MAX_TOTAL`` in all (:func:`acquire` raises
:class:`StreamLimitExceeded`, the view answers 429). A :class:`Lease` is released when its stream
ends, when the client disconnects (the generator's ``finally``), when the response is closed, or,
at the latest, when it is garbage-collected (a response whose stream never started).

Under WSGI (the test client, ``runserver``) the view serves :func:`event_stream_blocking`, the same
wire format from a polling generator: a WSGI server gives every stream a thread of its own anyway.

Wire format: ``retry: 3000`` first, then one ``id:``/``event:``/``data:`` block per event and a
``: keep-alive`` comment after ``STREAM_HEARTBEAT_S`` seconds without a write.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.conf import settings
from django.db import close_old_connections, connections

from registry.events.cursor import events_after, events_head
from registry.events.models import Event

logger = logging.getLogger(__name__)

RETRY = b"retry: 3000\n\n"
KEEPALIVE = b": keep-alive\n\n"
BATCH = 200  # events per query; a full batch is followed at once by the next query
DEFAULT_TIMEOUT_S = 300
MAX_TIMEOUT_S = 3600
RETRY_AFTER_S = 10  # the Retry-After of a 429

T = TypeVar("T")


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id, "type": event.type, "finding": event.finding_id, "plugin": event.plugin,
        "payload": event.payload, "created_at": event.created_at.isoformat(),
    }


def format_events(events: Sequence[Event]) -> bytes:
    """One ``id:``/``event:``/``data:`` block per event."""
    chunks = []
    for event in events:
        data = json.dumps(event_json(event), separators=(",", ":"))
        chunks.append(f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n")
    return "".join(chunks).encode()


# --- the bounded database pool -------------------------------------------------------------------

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _db_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=max(1, int(getattr(settings, "STREAM_DB_THREADS", 4))), thread_name_prefix="sse-db"
            )
        return _pool


def _in_db_thread(fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
    # As Django does at the start and the end of a request: drop this thread's connection if it
    # errored or is older than CONN_MAX_AGE (a fresh one is opened on the next query).
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


def _close_connections(barrier: threading.Barrier) -> None:
    connections.close_all()
    try:
        barrier.wait(timeout=5)  # every pool thread takes exactly one of these tasks
    except threading.BrokenBarrierError:
        pass


def shutdown_pool() -> None:
    """Close the pool threads' database connections and stop them (tests, process exit); the next
    query starts a new pool."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is None:
        return
    workers = pool._max_workers
    barrier = threading.Barrier(workers)
    for _ in range(workers):
        pool.submit(_close_connections, barrier)
    pool.shutdown(wait=True)


async def run_db(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` (ORM code) on the stream's bounded thread pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_db_pool(), functools.partial(_in_db_thread, fn, args, kwargs))


# --- the per-process caps ------------------------------------------------------------------------


class StreamLimitExceeded(Exception):
    def __init__(self, scope: str, limit: int):
        self.scope = scope  # "client" or "total"
        self.limit = limit
        self.retry_after = RETRY_AFTER_S
        what = "for this client" if scope == "client" else "on this server"
        super().__init__(f"too many open event streams {what} (at most {limit}); retry later")

    def as_detail(self) -> dict[str, Any]:
        return {"detail": str(self), "errors": {}, "limit": self.limit, "scope": self.scope,
                "retry_after": self.retry_after}


_slots_lock = threading.Lock()
_per_client: dict[str, int] = {}
_total = 0


class Lease:
    """One open stream's slot; :meth:`release` is idempotent."""

    def __init__(self, client: str):
        self.client = client
        self._released = False

    def release(self) -> None:
        global _total
        with _slots_lock:
            if self._released:
                return
            self._released = True
            _total -= 1
            left = _per_client.get(self.client, 1) - 1
            if left > 0:
                _per_client[self.client] = left
            else:
                _per_client.pop(self.client, None)

    close = release  # Django closes a streaming response's content when the response is closed

    def __del__(self) -> None:  # a response dropped before its stream started
        self.release()


def acquire(client: str) -> Lease:
    """A slot for one more stream of ``client``, or :class:`StreamLimitExceeded`."""
    global _total
    per_client = int(settings.STREAM_MAX_PER_CLIENT)
    total = int(settings.STREAM_MAX_TOTAL)
    with _slots_lock:
        if _total >= total:
            raise StreamLimitExceeded("total", total)
        if _per_client.get(client, 0) >= per_client:
            raise StreamLimitExceeded("client", per_client)
        _total += 1
        _per_client[client] = _per_client.get(client, 0) + 1
    return Lease(client)


def open_streams() -> dict[str, Any]:
    """The counters (diagnostics and tests): {"total": n, "per_client": {client: n}}."""
    with _slots_lock:
        return {"total": _total, "per_client": dict(_per_client)}


# --- the watcher ---------------------------------------------------------------------------------


class HeadWatcher:
    """Polls the head of the event log for every stream of one event loop; a change of the head
    bumps ``generation`` and wakes every waiting stream."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.head: int | None = None
        self.generation = 0
        self.polls = 0
        self.streams = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None

    def attach(self) -> None:
        self.streams += 1
        if self._task is None:
            self._task = self.loop.create_task(self._run(), name="event-stream-watcher")

    def detach(self) -> None:
        self.streams -= 1

    async def _run(self) -> None:
        try:
            while self.streams > 0:
                try:
                    head = await run_db(events_head)
                except Exception:  # noqa: BLE001 - a database hiccup must not end every stream
                    logger.exception("event stream watcher: reading the head of the log failed")
                else:
                    self.polls += 1
                    if head != self.head:
                        self.head = head
                        self.generation += 1
                        changed, self._changed = self._changed, asyncio.Event()
                        changed.set()
                await asyncio.sleep(float(getattr(settings, "STREAM_POLL_S", 1.0)))
        finally:
            self._task = None  # the next stream starts a new watcher

    async def wait(self, generation: int, timeout: float) -> bool:
        """Wait until the head has moved past ``generation`` (True) or ``timeout`` passes (False)."""
        if self.generation != generation:
            return True
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            return self.generation != generation
        return True


_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HeadWatcher] = weakref.WeakKeyDictionary()


def watcher() -> HeadWatcher:
    """The watcher of the running event loop (one per server process under uvicorn)."""
    loop = asyncio.get_running_loop()
    found = _watchers.get(loop)
    if found is None:
        found = _watchers[loop] = HeadWatcher(loop)
    return found


# --- the streams ---------------------------------------------------------------------------------


async def event_stream(
    *,
    user: Any,
    after: int,
    timeout_s: float,
    heartbeat_s: float | None = None,
    lease: Lease | None = None,
    query: Callable[..., Awaitable[list[Event]]] | None = None,
) -> AsyncIterator[bytes]:
    """The live stream of the events ``user`` may see after the event id ``after`` (ASGI).

    Reads the log only when the watcher reports that its head moved (and once at the start); writes
    a keep-alive comment after ``heartbeat_s`` (``STREAM_HEARTBEAT_S``) without a write; ends after
    ``timeout_s``. ``lease`` is released however the stream ends (timeout, disconnect, error).
    """
    heartbeat = float(settings.STREAM_HEARTBEAT_S if heartbeat_s is None else heartbeat_s)
    read = query or run_db
    head = watcher()
    head.attach()
    try:
        deadline = time.monotonic() + timeout_s
        last_write = time.monotonic()
        yield RETRY
        moved = True
        generation = head.generation
        while True:
            if moved:
                generation = head.generation  # before the read: a change during it wakes us again
                events = await read(events_after, after, limit=BATCH, visible_to=user)
                if events:
                    after = events[-1].id
                    yield format_events(events)
                    last_write = time.monotonic()
                    if len(events) >= BATCH:
                        continue  # more are waiting
            now = time.monotonic()
            if now >= deadline:
                return
            if now - last_write >= heartbeat:
                yield KEEPALIVE
                last_write = now = time.monotonic()
            moved = await head.wait(generation, max(0.0, min(deadline - now, last_write + heartbeat - now)))
    finally:
        head.detach()
        if lease is not None:
            lease.release()


def event_stream_blocking(
    *,
    user: Any,
    after: int,
    timeout_s: float,
    poll_s: float | None = None,
    keepalive_s: float | None = None,
    lease: Lease | None = None,
) -> Iterator[bytes]:
    """The same stream as a blocking, polling iterator (WSGI servers, scripts, tests): every
    ``poll_s`` seconds one query on the caller's thread and connection."""
    poll = float(getattr(settings, "STREAM_POLL_S", 1.0) if poll_s is None else poll_s)
    keepalive = float(settings.STREAM_HEARTBEAT_S if keepalive_s is None else keepalive_s)
    try:
        deadline = time.monotonic() + timeout_s
        last_write = time.monotonic()
        yield RETRY
        while True:
            events = events_after(after, limit=BATCH, visible_to=user)
            if events:
                after = events[-1].id
                yield format_events(events)
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= keepalive:
                yield KEEPALIVE
                last_write = time.monotonic()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if len(events) < BATCH:
                time.sleep(min(poll, remaining))
    finally:
        if lease is not None:
            lease.release()
