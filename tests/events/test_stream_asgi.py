"""The live stream under ASGI: a real uvicorn process on the test database. Open streams hold no
worker (other requests are answered at once), events reach them through the one watcher, resume and
visibility are as under WSGI, and the per-client cap is enforced and released on disconnect."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth.models import AnonymousUser

from registry.accounts.services import token_create
from registry.events import stream
from tests.conftest import live_uvicorn
from tests.events.helpers import emit, finding
from tests.factories import UserFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

MAX_PER_CLIENT = 4


@pytest.fixture(scope="module")
def server(worker_env, tmp_path_factory) -> Iterator[str]:
    """uvicorn serving registry.asgi on the test database; small heartbeat and poll interval."""
    env = {**worker_env, "STREAM_HEARTBEAT_S": "0.5", "STREAM_POLL_S": "0.2",
           "STREAM_MAX_PER_CLIENT": str(MAX_PER_CLIENT)}
    with live_uvicorn(env, tmp_path_factory.mktemp("stream") / "server.log") as address:
        yield address


class Stream:
    """One SSE client on its own connection (``source``: a loopback address to appear as another client)."""

    def __init__(self, server: str, query: str = "", *, token: str | None = None, source: str | None = None,
                 **headers: str):
        host, port = server.split(":")
        self.connection = http.client.HTTPConnection(
            host, int(port), timeout=5, source_address=(source, 0) if source else None
        )
        if token:
            headers["Authorization"] = f"Token {token}"
        self.connection.request("GET", f"/api/v1/events/stream{query}", headers=headers)
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.buffer = b""

    def json(self) -> dict:
        return json.loads(self.response.read())

    def read_until(self, needle: bytes, timeout: float = 5) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.buffer:
            assert time.monotonic() < deadline, f"{needle!r} not received: {self.buffer!r}"
            chunk = self.response.read1(65536)
            assert chunk, f"stream ended before {needle!r}: {self.buffer!r}"
            self.buffer += chunk
        return self.buffer

    def ids(self) -> list[int]:
        return [json.loads(line.removeprefix("data: "))["id"]
                for line in self.buffer.decode().split("\n") if line.startswith("data: ")]

    def close(self) -> None:
        self.connection.close()


def _healthz_seconds(server: str) -> float:
    host, port = server.split(":")
    started = time.monotonic()
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}
    connection.close()
    return time.monotonic() - started


def _token(user) -> str:
    return token_create(user=user, name="stream")[1]


def test_open_streams_do_not_block_other_requests(server):
    streams = [Stream(server, "?timeout=30", source=f"127.0.0.{10 + n}") for n in range(20)]
    try:
        for s in streams:
            assert s.status == 200 and s.response.getheader("Content-Type").startswith("text/event-stream")
            s.read_until(b"retry: 3000\n\n")
        assert max(_healthz_seconds(server) for _ in range(5)) < 2
        event = emit("finding.created", finding(created_by=UserFactory()))
        for s in streams:  # one watcher wakes them all
            s.read_until(f"id: {event.pk}\n".encode())
    finally:
        for s in streams:
            s.close()


def test_live_events_arrive_and_hidden_ones_never(server):
    author = UserFactory()
    public, hidden = finding(created_by=author), finding(created_by=author, restricted_to=[])
    s = Stream(server, "?timeout=10")  # from now
    try:
        assert s.status == 200
        assert s.read_until(b"retry: 3000\n\n").startswith(b"retry: 3000\n\n")
        first = emit("finding.updated", public, title="one")
        secret = emit("finding.updated", hidden, title="secret")
        last = emit("run.finished", public, plugin="echo", run=7)
        s.read_until(f"id: {last.pk}\n".encode())
        assert s.ids() == [first.pk, last.pk]
        assert b"secret" not in s.buffer and f"id: {secret.pk}\n".encode() not in s.buffer
        assert f"id: {last.pk}\nevent: run.finished\ndata: ".encode() in s.buffer
    finally:
        s.close()


def test_resume_with_last_event_id_and_after(server):
    target = finding(created_by=UserFactory())
    e1, e2, e3 = (emit("finding.updated", target, n=n) for n in range(3))
    s = Stream(server, "?after=0&timeout=10", **{"Last-Event-ID": str(e1.pk)})  # the header wins
    try:
        s.read_until(f"id: {e3.pk}\n".encode())
        assert s.ids() == [e2.pk, e3.pk]
    finally:
        s.close()
    s = Stream(server, f"?after={e2.pk}&timeout=10")
    try:
        s.read_until(f"id: {e3.pk}\n".encode())
        assert s.ids() == [e3.pk]
    finally:
        s.close()


def test_per_client_cap_then_released_on_disconnect(server):
    token = _token(UserFactory())
    streams = [Stream(server, "?timeout=30", token=token) for _ in range(MAX_PER_CLIENT)]
    try:
        for s in streams:
            assert s.status == 200
            s.read_until(b"retry: 3000\n\n")
        refused = Stream(server, "?timeout=30", token=token)
        assert refused.status == 429
        assert int(refused.response.getheader("Retry-After")) > 0
        body = refused.json()
        assert "detail" in body and body["limit"] == MAX_PER_CLIENT and body["scope"] == "client"
        refused.close()
        other = Stream(server, "?timeout=30", token=_token(UserFactory()))  # another client is not affected
        assert other.status == 200
        other.close()

        streams.pop().close()  # a disconnect frees its slot
        deadline = time.monotonic() + 5
        while True:
            again = Stream(server, "?timeout=30", token=token)
            if again.status == 200:
                streams.append(again)
                break
            again.close()
            assert time.monotonic() < deadline, "the closed stream's slot was not released"
            time.sleep(0.1)
    finally:
        for s in streams:
            s.close()

    # streams that end by their ?timeout free their slots too
    ended = [Stream(server, "?timeout=1", token=token) for _ in range(MAX_PER_CLIENT)]
    for s in ended:
        assert s.status == 200
        assert s.response.read().startswith(b"retry: 3000\n\n")  # to the end of the stream
        s.close()
    deadline = time.monotonic() + 5
    while (s := Stream(server, "?timeout=1", token=token)).status != 200:
        s.close()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    s.close()


def test_heartbeat_and_timeout(server):
    s = Stream(server, "?timeout=2")
    try:
        started = time.monotonic()
        s.read_until(b": keep-alive\n\n", timeout=3)  # STREAM_HEARTBEAT_S=0.5 in the server's env
        rest = s.response.read()  # ends by itself at ?timeout
        assert time.monotonic() - started < 5
        assert set((s.buffer + rest).split(b"\n\n")) <= {b"retry: 3000", b": keep-alive", b""}
    finally:
        s.close()


def test_bad_parameters_and_bad_token(server):
    s = Stream(server, "?after=abc")
    assert s.status == 400 and "after" in s.json()["errors"]
    s.close()
    s = Stream(server, "?timeout=soon")
    assert s.status == 400 and "timeout" in s.json()["errors"]
    s.close()
    s = Stream(server, "?timeout=1", token="not-a-token")
    assert s.status == 401 and s.json()["detail"]
    s.close()


def test_restricted_events_reach_only_those_allowed(server):
    author, stranger = UserFactory(), UserFactory()
    restricted = finding(created_by=author, restricted_to=[])
    public = finding(created_by=author)
    readers = {"anonymous": Stream(server, "?timeout=10"),
               "stranger": Stream(server, "?timeout=10", token=_token(stranger)),
               "author": Stream(server, "?timeout=10", token=_token(author))}
    try:
        for s in readers.values():
            assert s.status == 200
            s.read_until(b"retry: 3000\n\n")
        secret = emit("finding.updated", restricted, title="secret")
        marker = emit("finding.updated", public, title="marker")
        for s in readers.values():
            s.read_until(f"id: {marker.pk}\n".encode())
        assert readers["author"].ids() == [secret.pk, marker.pk]
        for who in ("anonymous", "stranger"):
            assert readers[who].ids() == [marker.pk], who
            assert b"secret" not in readers[who].buffer
    finally:
        for s in readers.values():
            s.close()


# --- in process: the caps and their release ------------------------------------------------------


def test_leases_are_capped_and_released_once(settings):
    settings.STREAM_MAX_PER_CLIENT = 2
    settings.STREAM_MAX_TOTAL = 3
    before = stream.open_streams()["total"]
    a, b = stream.acquire("c:a"), stream.acquire("c:a")
    with pytest.raises(stream.StreamLimitExceeded) as refused:
        stream.acquire("c:a")
    assert refused.value.scope == "client" and refused.value.as_detail()["limit"] == 2
    c = stream.acquire("c:b")
    if before == 0:
        with pytest.raises(stream.StreamLimitExceeded) as refused:
            stream.acquire("c:c")
        assert refused.value.scope == "total"
    a.release()
    a.release()  # idempotent
    assert stream.open_streams()["per_client"]["c:a"] == 1
    b.release()
    del c  # a lease dropped without release (a response whose stream never started)
    counts = stream.open_streams()
    assert "c:a" not in counts["per_client"] and "c:b" not in counts["per_client"]
    assert counts["total"] == before


def test_async_stream_releases_its_lease_when_cancelled():
    """A client disconnect cancels the stream's task while it waits: the finally releases the slot."""

    async def scenario() -> None:
        lease = stream.acquire("c:cancel")
        reads = []

        async def query(fn, *args, **kwargs):
            reads.append(args)
            return []

        agen = stream.event_stream(user=AnonymousUser(), after=0, timeout_s=30, heartbeat_s=10, lease=lease,
                                   query=query)

        async def consume() -> None:
            async for _ in agen:
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        assert reads and stream.open_streams()["per_client"].get("c:cancel") == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert "c:cancel" not in stream.open_streams()["per_client"]
        assert stream.watcher().streams == 0

    try:
        # a loop of its own in a thread of its own: a browser test's session-wide Playwright keeps
        # an event loop in the main thread, where async_to_sync refuses to run
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, scenario()).result(timeout=30)
    finally:
        stream.shutdown_pool()  # its connections to the test database, before the database is dropped


def test_head_answers_at_once_and_takes_no_slot(server):
    """HEAD: the stream's status and headers, an empty body, at once; no slot of the per-client cap."""
    host, port = server.split(":")
    token = _token(UserFactory())
    heads = []
    try:
        for _ in range(MAX_PER_CLIENT + 1):  # more than the cap, each connection kept open
            connection = http.client.HTTPConnection(host, int(port), timeout=5)
            started = time.monotonic()
            connection.request("HEAD", "/api/v1/events/stream?timeout=30", headers={"Authorization": f"Token {token}"})
            response = connection.getresponse()
            assert response.status == 200 and response.read() == b""
            assert response.getheader("Content-Type").startswith("text/event-stream")
            assert response.getheader("Cache-Control") == "no-cache"
            assert time.monotonic() - started < 3
            heads.append(connection)
        streams = [Stream(server, "?timeout=30", token=token) for _ in range(MAX_PER_CLIENT)]
        try:
            assert [s.status for s in streams] == [200] * MAX_PER_CLIENT  # the HEADs took no slot
            for s in streams:
                s.read_until(b"retry: 3000\n\n")
        finally:
            for s in streams:
                s.close()
    finally:
        for connection in heads:
            connection.close()
