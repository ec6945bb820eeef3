"""A live registry for the client and CLI tests: uvicorn serving registry.asgi on the test database
(as tests/events/test_stream_asgi.py does), and a user with a real API token."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(worker_env) -> Iterator[str]:
    """The registry's root URL, e.g. http://127.0.0.1:PORT (a real uvicorn process)."""
    port = _free_port()
    env = {**worker_env, "STREAM_HEARTBEAT_S": "0.5", "STREAM_POLL_S": "0.2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "registry.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.stdout.read().decode()[-3000:]
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def token(user) -> str:
    from registry.accounts.services import token_create

    return token_create(user=user, name="client tests")[1]


@pytest.fixture
def stranger_token(other_user) -> str:
    from registry.accounts.services import token_create

    return token_create(user=other_user, name="stranger")[1]
