"""A live registry for the client and CLI tests: uvicorn serving registry.asgi on the test database
(as tests/events/test_stream_asgi.py does), and a user with a real API token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import live_uvicorn


@pytest.fixture(scope="module")
def server(worker_env, tmp_path_factory) -> Iterator[str]:
    """The registry's root URL, e.g. http://127.0.0.1:PORT (a real uvicorn process)."""
    env = {**worker_env, "STREAM_HEARTBEAT_S": "0.5", "STREAM_POLL_S": "0.2"}
    with live_uvicorn(env, tmp_path_factory.mktemp("client") / "server.log") as address:
        yield f"http://{address}"


@pytest.fixture
def token(user) -> str:
    from registry.accounts.services import token_create

    return token_create(user=user, name="client tests")[1]


@pytest.fixture
def stranger_token(other_user) -> str:
    from registry.accounts.services import token_create

    return token_create(user=other_user, name="stranger")[1]
