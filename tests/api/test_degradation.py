"""The API degrades cleanly: a frozen broker, a frozen or absent database and a missing beat give
quick, redacted answers (202 with the runs queued; 503 with Retry-After), never a hang or a 500."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
from django.db import connection, connections
from django.test import override_settings

from registry.reproductions import services
from registry.reproductions.models import Run
from tests.factories import FindingFactory
from worker import broker
from worker import tasks as worker_tasks
from worker.celery import app


@contextmanager
def blackhole() -> Iterator[int]:
    """A TCP listener that accepts connections and never answers (a frozen service): its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        server.close()


def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


@contextmanager
def broker_at(url: str) -> Iterator[None]:
    """Point the Celery app (its publishing pools) and the direct Redis client at ``url``."""
    # The pools are kombu's process-wide ones (keyed by connection): set aside, never closed.
    saved = app.conf.broker_write_url, app._pool, app.amqp._producer_pool
    app._pool = app.amqp._producer_pool = None
    broker.reset_client()
    app.conf.broker_write_url = url
    try:
        with override_settings(CELERY_BROKER_URL=url):
            yield
    finally:
        app.conf.broker_write_url, app._pool, app.amqp._producer_pool = saved
        broker.reset_client()


@contextmanager
def database_at(port: int) -> Iterator[None]:
    """This thread's and new threads' connections go to 127.0.0.1:``port`` until the block ends."""
    connection.close()
    with mock.patch.dict(connection.settings_dict, {"HOST": "127.0.0.1", "PORT": str(port)}), \
            mock.patch.dict(connections.settings["default"], {"HOST": "127.0.0.1", "PORT": str(port)}):
        try:
            yield
        finally:
            connection.close()


def _body(response) -> str:
    return response.content.decode()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_frozen_broker_does_not_hold_up_a_reproduction_request(user, api):
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(
        finding=finding, user=user, plugin="echo", params={}, reproduce=False
    )
    with blackhole() as port, broker_at(f"redis://127.0.0.1:{port}/0"):
        started = time.monotonic()
        response = api.post(f"/api/v1/experiments/{experiment.pk}/reproductions/", {"seeds": [1, 2, 3]},
                            format="json")
        elapsed = time.monotonic() - started
    assert response.status_code == 202, _body(response)
    print(f"\nPOST with a frozen broker answered in {elapsed:.2f} s")
    assert elapsed < 5, elapsed
    runs = Run.objects.filter(reproduction__experiment=experiment)
    assert runs.count() == 3
    assert set(runs.values_list("state", flat=True)) == {"queued"}
    assert not runs.filter(dispatched_at__isnull=False).exists()  # the reaper sends them


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_readyz_answers_quickly_and_redacted_when_database_and_broker_are_frozen(anon):
    with blackhole() as db_port, blackhole() as broker_port, database_at(db_port), \
            broker_at(f"redis://:s3cret@127.0.0.1:{broker_port}/0"):
        started = time.monotonic()
        response = anon.get("/readyz")
        elapsed = time.monotonic() - started
    assert elapsed < 2.5, elapsed
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "unavailable" and checks["broker"] == "unavailable"
    text = _body(response)
    for leak in ("s3cret", "127.0.0.1", str(db_port), str(broker_port), "redis://", "timeout", "Error"):
        assert leak not in text


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_database_down_is_503_with_retry_after_everywhere(user, client_for):
    from registry.accounts.services import token_create

    token = token_create(user=user, name="degradation")[1]
    finding = FindingFactory(created_by=user)
    paths = ["/api/v1/findings/", f"/api/v1/findings/{finding.pk}/", "/api/v1/runs/", "/", "/readyz"]
    with database_at(closed_port()):
        anon = client_for(None)
        anon.raise_request_exception = False
        for path in paths:
            started = time.monotonic()
            response = anon.get(path)
            assert time.monotonic() - started < 3, path
            assert response.status_code == 503, (path, response.status_code)
            assert response.has_header("Retry-After"), path
            if path != "/readyz":
                assert response.json()["detail"] == "the database is unavailable; retry shortly", path
        authed = client_for(None)
        authed.raise_request_exception = False
        response = authed.post("/api/v1/findings/", {"title": "x"}, format="json",
                               HTTP_AUTHORIZATION=f"Token {token}")
        assert response.status_code == 503 and response["Retry-After"]
        assert anon.get("/healthz").status_code == 200  # liveness: the process is up
    assert client_for(None).get("/api/v1/findings/").status_code == 200  # and back


@pytest.mark.redis
@pytest.mark.django_db
def test_a_second_beat_does_no_double_work(settings):
    settings.REAPER_INTERVAL_S = 5
    calls: list[int] = []
    barrier = threading.Barrier(2)
    results: list[object] = []

    def reap() -> dict:
        calls.append(1)
        return {"requeued": 0}

    def trigger() -> None:
        barrier.wait()
        results.append(worker_tasks.runs_reap(lease=True))

    with mock.patch("registry.reproductions.services.runs_reap", reap):
        threads = [threading.Thread(target=trigger) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert len(calls) == 1, results
        assert {"skipped": "another beat's trigger holds the lease"} in results
        assert worker_tasks.runs_reap() == {"requeued": 0}  # a manual trigger always works
        assert len(calls) == 2


@pytest.mark.redis
@pytest.mark.django_db
def test_readyz_reports_a_missing_beat(anon, settings):
    settings.BEAT_MISSING_AFTER_S = 25
    client = broker.redis_client()
    key = f"{settings.CELERY_BROKER_KEY_PREFIX}{broker.BEAT_KEY}"
    client.delete(key)
    assert anon.get("/readyz").json()["checks"]["beat"] == "not seen"
    broker.beat_record()
    response = anon.get("/readyz")
    assert response.status_code == 200 and response.json()["checks"]["beat"] == "ok"
    broker.beat_record(time.time() - 100)
    response = anon.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["beat"].startswith("missing for 10")
    client.delete(key)
    assert json.loads(json.dumps(response.json()))["status"] == "unavailable"
