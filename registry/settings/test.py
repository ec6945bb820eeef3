"""Tests: PostgreSQL and Redis where DATABASE_URL / CELERY_BROKER_URL point to them."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("REGISTRY_VAR_DIR", tempfile.mkdtemp(prefix="registry-test-"))

from registry.settings.base import *  # noqa: E402, F403
from registry.settings.base import VAR_DIR  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ARTIFACT_ROOT = Path(VAR_DIR) / "artifacts"
RUN_HEARTBEAT_INTERVAL_S = 0.5
PLUGINS_EXTRA = [
    "echo=tests.fakes.plugins:EchoExperiment",
    "crashing=tests.fakes.plugins:CrashingExperiment",
]
