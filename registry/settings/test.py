"""Tests: PostgreSQL and Redis where DATABASE_URL / CELERY_BROKER_URL point to them."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("REGISTRY_VAR_DIR", tempfile.mkdtemp(prefix="registry-test-"))
# REGISTRY_DATA_DIR (registry/datadir.py) would win over its older name: the tests' folder is the one above
os.environ.pop("REGISTRY_DATA_DIR", None)
# Separate test runs on one machine (and their workers) must not share a database or broker keys.
os.environ.setdefault("TEST_RUN_ID", str(os.getpid()))
os.environ.setdefault("CELERY_BROKER_KEY_PREFIX", f"test{os.environ['TEST_RUN_ID']}:")

from registry.settings.base import *  # noqa: E402, F403
from registry.settings.base import VAR_DIR, cache_from_url  # noqa: E402

DATABASES["default"]["TEST"] = {"NAME": f"test_registry_{os.environ['TEST_RUN_ID']}"}  # noqa: F405
REST_FRAMEWORK = {  # noqa: F405
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_THROTTLE_RATES": {"anon": "1000000/minute", "user": "1000000/minute", "reproductions": "1000000/hour"},
}
# Throttle counts in Redis where the broker is (its database, keys under this run's prefix), as
# in production; else in memory.
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) and not os.environ.get("CACHE_URL"):  # noqa: F405
    CACHES = {"default": {**cache_from_url(CELERY_BROKER_URL), "KEY_PREFIX": f"test{os.environ['TEST_RUN_ID']}:cache"}}  # noqa: F405
WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True  # the tests' webhook receivers listen on 127.0.0.1
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ARTIFACT_ROOT = Path(VAR_DIR) / "artifacts"
RUN_HEARTBEAT_INTERVAL_S = 0.5
RUN_KILL_GRACE_S = 2.0
PLUGINS_EXTRA = [
    "echo=tests.fakes.plugins:EchoExperiment",
    "echo_curves=tests.fakes.plugins:CurvedEchoExperiment",
    "crashing=tests.fakes.plugins:CrashingExperiment",
    "host_bound=tests.fakes.plugins:HostBoundExperiment",
    "faulty=tests.fakes.plugins:FaultyExperiment",
]
