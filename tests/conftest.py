"""Shared fixtures. Services (PostgreSQL, Redis, a real Celery worker) are real: where one is
missing the tests that need it are skipped locally, and fail under CI (CI=true)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parents[1]


def env_flag(value: str | None) -> bool:
    """A boolean environment variable: unset, "", "false", "0", "no", "off" (any case, spaces
    ignored) are false; "true", "1", "yes", "on" and any other value (some CI systems set CI to
    their own name) are true."""
    return (value or "").strip().lower() not in {"", "false", "0", "no", "off"}


IN_CI = env_flag(os.environ.get("CI"))


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required under CI and is not available", pytrace=False)
    pytest.skip(f"{what} not available")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if "worker" in item.keywords:
            item.add_marker(pytest.mark.slow)


def _flush_retrying_deadlocks() -> None:
    """Transactional tests end with a TRUNCATE of every table; a server process the test started
    (uvicorn, a worker) may still run a query joining several of them, and PostgreSQL may then pick
    the TRUNCATE as the deadlock's victim. The flush is atomic, so running it again is safe."""
    from django.core.management.base import CommandError
    from django.core.management.commands import flush

    handle = flush.Command.handle
    if getattr(handle, "retries_deadlocks", False):
        return

    def handle_retrying(self, **options):
        for attempt in range(5):
            try:
                return handle(self, **options)
            except CommandError as error:
                if "deadlock detected" not in str(error.__cause__) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    handle_retrying.retries_deadlocks = True
    flush.Command.handle = handle_retrying


_flush_retrying_deadlocks()


@pytest.fixture(autouse=True)
def _require_services(request) -> None:
    if request.node.get_closest_marker("postgres") and settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        _missing("PostgreSQL (set DATABASE_URL)")
    if request.node.get_closest_marker("redis") and not settings.CELERY_BROKER_URL.startswith("redis"):
        _missing("Redis (set CELERY_BROKER_URL)")


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
def mid_hour_clock(monkeypatch):
    """Django's clock (``timezone.now``, which ``auto_now_add`` reads too) moved back to 10 minutes
    past the current UTC hour, still running: a test that counts per clock hour (the daily quota's
    hourly rows) never straddles an hour. Returns the shift."""
    from datetime import UTC, timedelta

    from django.utils import timezone

    real_now = timezone.now
    current = real_now().astimezone(UTC)
    shift = current - current.replace(minute=10, second=0, microsecond=0)
    if shift < timedelta(0):
        shift += timedelta(hours=1)
    monkeypatch.setattr(timezone, "now", lambda: real_now() - shift)
    return shift


@pytest.fixture
def staff_user(db):
    return UserFactory(is_staff=True)


@pytest.fixture
def client_for() -> Callable:
    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def api(user, client_for) -> APIClient:
    return client_for(user)


@pytest.fixture
def anon(client_for) -> APIClient:
    return client_for(None)


class WorkerProcess:
    """A real ``celery worker`` subprocess on the test database and broker."""

    def __init__(self, env: dict[str, str], queues: str = "cpu,maintenance", concurrency: int = 2):
        self.log_path = Path(settings.VAR_DIR) / f"worker-{time.time_ns()}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", queues,
                "--concurrency", str(concurrency), "--loglevel", "INFO", "--without-gossip",
                "--without-mingle", "-n", f"test-{time.time_ns()}@%h",
            ],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited: {self.log_path.read_text()[-3000:]}")
            if "ready." in self.log_path.read_text():
                return
            time.sleep(0.2)
        raise RuntimeError(f"celery worker did not start: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and its pool): a machine dying mid-run."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text()


@pytest.fixture(scope="session")
def worker_env(django_db_setup, django_db_blocker) -> dict[str, str]:
    """Environment for worker subprocesses: the test database (not the dev one) and broker."""
    from django.db import connection

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        _missing("PostgreSQL for the worker tests (set DATABASE_URL)")
    host, port, name = db["HOST"] or "127.0.0.1", db["PORT"] or 5432, connection.settings_dict["NAME"]
    url = f"postgres://{db['USER'] or 'postgres'}@{host}:{port}/{name}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "registry.settings.test",
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "REGISTRY_VAR_DIR": str(settings.VAR_DIR),
        "RUN_HEARTBEAT_INTERVAL_S": "0.5",
        "PYTHONPATH": str(ROOT),
    }
    from worker.celery import app

    with app.connection_for_write() as conn:
        for queue in ("cpu", "gpu", "maintenance"):
            try:
                conn.default_channel.queue_purge(queue)
            except Exception:  # noqa: BLE001 - the queue may not exist yet
                pass
    return env


@pytest.fixture(scope="session")
def celery_worker(worker_env) -> Iterator[WorkerProcess]:
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        _missing("Redis for the worker tests (set CELERY_BROKER_URL)")
    worker = WorkerProcess(worker_env)
    yield worker
    worker.stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 120, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture(autouse=True)
def _effects_recomputes_settle(request) -> Iterator[None]:
    """Worker tests: the effects recomputes their runs enqueued finish before the test database
    is flushed (a recompute still holding row locks would deadlock the flush's TRUNCATE)."""
    if "worker" not in request.keywords or "celery_worker" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("transactional_db")  # set up before this fixture: flushed after it
    yield
    from django.db import transaction

    from registry.effects.models import FindingEffects

    try:
        wait_for(lambda: not FindingEffects.objects.filter(pending=True).exists(), timeout=60, interval=0.1)
    except AssertionError:
        return  # a recompute that cannot finish is the test's own failure to report, not this hook's
    with transaction.atomic():
        # a running recompute holds its row until it commits: this waits for it
        list(FindingEffects.objects.select_for_update().values_list("pk"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """As the worker does by default (RUN_TORCH_THREADS=1): toy models gain nothing from more."""
    import torch

    torch.set_num_threads(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_uvicorn(env: dict[str, str], log_path: Path, *extra_args: str) -> Iterator[str]:
    """A real uvicorn serving ``registry.asgi`` with ``env`` (e.g. ``worker_env``: the test
    database); yields ``127.0.0.1:PORT`` once ``/healthz`` answers, stops it afterwards. Output goes
    to ``log_path`` (a file, not a pipe: a pipe nobody reads fills and blocks the server)."""
    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "registry.asgi:application", "--host", "127.0.0.1", "--port",
             str(port), "--log-level", "warning", *extra_args],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log_path.read_text()[-3000:]
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    connection.request("GET", "/healthz")
                    if connection.getresponse().status == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.2)
            yield f"127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
