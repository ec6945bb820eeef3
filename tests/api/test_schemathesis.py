"""schemathesis against a live server: every operation of the OpenAPI schema, every check
(status codes, content types, headers, response schemas, negative and positive data, unsupported
methods, ignored authentication, object-level authorisation with two users, use after free and
resource availability through the stateful phase's links), a bounded number of examples, and zero
failures.

The server is uvicorn serving ``registry.asgi`` on the test database (as in production, minus
gunicorn), seeded with two users who hold API tokens, their findings, claims, an experiment with
queued runs, a subscription and an invitation. The event stream is left out: it holds its
connection open by design (tests/events/test_stream_asgi.py covers it).

``SCHEMATHESIS_MAX_EXAMPLES`` (default 10) bounds the examples per operation and phase;
``SCHEMATHESIS_SEED`` fixes the random seed (default 1, so that CI runs are reproducible).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.accounts.services import token_create
from registry.events.services import subscription_create
from registry.findings.models import Finding
from registry.findings.services import claim_create, finding_create, finding_update
from registry.reproductions.services import experiment_create
from tests.conftest import ROOT, live_uvicorn
from tests.factories import UserFactory

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
EXCLUDED_PATHS = ["/api/v1/events/stream"]  # a long-lived stream: test_stream_asgi.py


# A schema-valid request may still be refused with a 400 naming the field for what no schema states:
# a user, plugin, metric or finding that does not exist, two fields given together, a time in the
# past, an unknown field. Everything else positive_data_acceptance expects stays expected.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]
"""


@pytest.fixture
def server(worker_env, tmp_path) -> Iterator[str]:
    with live_uvicorn(worker_env, tmp_path / "server.log", "--no-server-header") as address:
        yield f"http://{address}"


def _seed() -> dict[str, str]:
    """Two users with tokens and something of their own to read, change and delete."""
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    tokens = {user.username: token_create(user=user, name="schemathesis")[1] for user in (alice, bob)}
    for owner, title in ((alice, "Deconvolution overlap makes checkerboards"), (bob, "Induction heads copy")):
        finding = finding_create(user=owner, title=title, kind=Finding.Kind.THEORY, tags=["vision"])
        claim_create(finding=finding, user=owner, metric="risk", direction="decrease")
        experiment_create(finding=finding, user=owner, plugin="echo", default_seeds=2)
        subscription_create(owner=owner, name=f"{owner.username}'s feed", channel="feed")
    restricted = finding_create(
        user=alice, title="Restricted to alice", kind=Finding.Kind.OBSERVATION, visibility="restricted"
    )
    finding_update(finding=restricted, user=alice, data={"authors": [alice, bob]})  # bob is invited
    return tokens


def test_schemathesis_finds_nothing(server, tmp_path):
    assert SCHEMATHESIS.exists(), "schemathesis is in the dev extra: pip install -e '.[dev]'"
    tokens = _seed()
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({
        "auth": [
            {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Token {token}"}]}
            for name, token in tokens.items()
        ]
    }))
    report = tmp_path / "report"
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(SCHEMATHESIS), "--no-color", "--config-file", str(config),
        "run", f"{server}/api/schema/?format=json", "--url", server,
        "--checks", "all", "--auth-wfc", str(auth),
        "--max-examples", os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10"),
        "--seed", os.environ.get("SCHEMATHESIS_SEED", "1"),
        "--workers", "2", "--request-timeout", "20",
        "--report", "junit", "--report-dir", str(report),
        *[arg for path in EXCLUDED_PATHS for arg in ("--exclude-path", path)],
    ]
    started = time.monotonic()
    out = tmp_path / "schemathesis.log"
    with out.open("w") as stream:
        result = subprocess.run(
            command, cwd=tmp_path, stdout=stream, stderr=subprocess.STDOUT, timeout=540,
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false",
                 "SCHEMATHESIS_HOOKS": "tests.api.schemathesis_hooks",
                 "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
        )
    elapsed = time.monotonic() - started
    output = out.read_text()
    print(output[-6000:])
    print(f"schemathesis: {elapsed:.0f} s")
    assert result.returncode == 0, output[-20000:]
