"""The web server borrows PostgreSQL connections from a pool; workers never pool; a forked web
worker makes its own pool (registry/asgi.py, registry/dbpool.py, worker/celery.py)."""

from __future__ import annotations

import http.client
import secrets
import subprocess
import sys
import time

import pytest
from django.db import connection

from tests.conftest import ROOT, live_uvicorn

pytestmark = pytest.mark.django_db(transaction=True)


def _server_connections(application_name: str) -> list[tuple[int, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, state FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
            [application_name],
        )
        return list(cursor.fetchall())


def test_the_web_server_reuses_its_pooled_connections(worker_env, tmp_path):
    """...and its readiness probe does not take connections from the pool (it used to keep each)."""
    name = f"pooltest_{secrets.token_hex(4)}"
    env = {**worker_env, "DATABASE_URL": f"{worker_env['DATABASE_URL']}?application_name={name}"}
    env.pop("DATABASE_POOL_MAX_SIZE", None)  # the server's own default
    with live_uvicorn(env, tmp_path / "uvicorn.log") as address:
        host, port = address.split(":")
        client = http.client.HTTPConnection(host, int(port), timeout=10)
        for _ in range(12):  # more readiness probes than the pool holds: each uses a connection of its own
            client.request("GET", "/readyz")
            response = client.getresponse()
            assert response.status == 200, response.read()[:500]
            response.read()
        seen: set[int] = set()
        for _ in range(20):
            client.request("GET", "/api/v1/findings/")
            response = client.getresponse()
            assert response.status == 200, response.read()[:500]
            response.read()
            seen |= {pid for pid, _ in _server_connections(name)}
        client.close()
        after = _server_connections(name)
    # without a pool every request opens and closes its own connection: none stays open between
    # requests and 20 requests use 20 backends
    assert after, "no connection of the web server stayed open between requests"
    assert all(state == "idle" for _, state in after), after
    assert len(seen) <= 8, f"{len(seen)} backends for 20 sequential requests"


def _python(code: str, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_a_worker_never_pools_even_when_the_environment_asks(worker_env):
    env = {**worker_env, "DATABASE_POOL_MAX_SIZE": "8"}
    out = _python(
        "import django; django.setup()\n"
        "from django.conf import settings\n"
        "database = settings.DATABASES['default']\n"
        "assert database['OPTIONS']['pool']['max_size'] == 8, database\n"
        "from worker.celery import _keep_liveness_connections\n"
        "_keep_liveness_connections(None, None)\n"
        "from django.db import connection\n"
        "connection.ensure_connection()\n"
        "print(connection.pool is None, database['CONN_MAX_AGE'])\n",
        env,
    )
    assert out == "True 600"


def test_a_forked_web_worker_opens_its_own_pool(worker_env):
    # `serve` imports registry.asgi in gunicorn's master, which may open the pool before forking
    env = {**worker_env, "DATABASE_POOL_MAX_SIZE": "2", "STALE_CHECK_ON_STARTUP": "false"}
    out = _python(
        "import os\n"
        "import registry.asgi\n"
        "import gc\n"
        "assert gc.get_freeze_count() > 0, 'the server left its start-up objects to the collector'\n"
        "from django.db import connection\n"
        "assert connection.pool is not None\n"
        "def backend():\n"
        "    with connection.cursor() as cursor:\n"
        "        cursor.execute('SELECT pg_backend_pid()')\n"
        "        return cursor.fetchone()[0]\n"
        "parent = backend()\n"
        "read, write = os.pipe()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    os.write(write, str(backend()).encode()); os._exit(0)\n"
        "os.waitpid(child, 0)\n"
        "print(parent, int(os.read(read, 32)), backend())\n",
        env,
    )
    parent, child, parent_again = (int(x) for x in out.split())
    assert child != parent, "the forked process used its parent's connection"
    assert parent_again == parent, "the parent lost its connection to the child"


def test_an_unreachable_database_is_still_a_quick_503_through_the_pool(worker_env, tmp_path):
    from tests.conftest import free_port

    env = {**worker_env, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/nothing",
           "DATABASE_POOL_TIMEOUT_S": "1"}
    with live_uvicorn(env, tmp_path / "uvicorn.log") as address:
        host, port = address.split(":")
        client = http.client.HTTPConnection(host, int(port), timeout=30)
        for _ in range(2):
            started = time.monotonic()
            client.request("GET", "/api/v1/findings/")
            response = client.getresponse()
            body = response.read()
            assert response.status == 503, body[:500]
            assert response.getheader("Retry-After")
            assert time.monotonic() - started < 10
        client.close()


def test_the_start_up_stale_check_opens_no_pool(worker_env):
    # under `serve` it runs in gunicorn's master, which serves nothing: a pool there would keep its
    # idle connections and threads for the life of the server
    env = {**worker_env, "DATABASE_POOL_MAX_SIZE": "2", "STALE_CHECK_ON_STARTUP": "true"}
    out = _python(
        "import threading\n"
        "import registry.asgi\n"
        "checks = [t for t in threading.enumerate() if t.name == 'stale-check']\n"
        "assert checks, 'no stale check ran'\n"
        "checks[0].join(60)\n"
        "from django.db.backends.postgresql.base import DatabaseWrapper\n"
        "print(sorted(DatabaseWrapper._connection_pools))\n",
        env,
    )
    assert out.splitlines()[-1] == "[]"
