"""docker-compose.yml cannot be run here (no Docker engine): check it stays consistent with the
settings and the worker's queues instead."""

import os
import subprocess
import sys

import yaml

from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_production_services_with_health_checks():
    services = COMPOSE["services"]
    assert set(services) == {"web", "worker-cpu", "worker-gpu", "beat", "postgres", "redis"}
    for name in ("web", "worker-cpu", "worker-gpu", "postgres", "redis"):
        assert "healthcheck" in services[name], name


def test_workers_consume_the_queues_runs_are_sent_to():
    services = COMPOSE["services"]
    for name in ("web", "worker-cpu", "worker-gpu", "beat"):  # the console commands, never `celery -A worker`
        assert "interp-registry-server" in services[name]["command"], name
        assert "celery -A worker " not in services[name]["command"], name
    assert "-Q cpu" in services["worker-cpu"]["command"]
    assert "-Q gpu" in services["worker-gpu"]["command"]
    assert "-Q maintenance" in services["beat"]["command"] and "beat" in services["beat"]["command"]
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_compose_environment_matches_the_production_settings():
    env = COMPOSE["services"]["web"]["environment"]
    assert env["DJANGO_SETTINGS_MODULE"] == "registry.settings.production"
    assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
    assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379")
    probe = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.DEBUG)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "registry.settings.production", "DJANGO_SECRET_KEY": "x",
             "DATABASE_URL": "postgres://registry:pw@postgres:5432/registry",
             "CELERY_BROKER_URL": "redis://redis:6379/0"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "redis://redis:6379/0", "False"]


def test_production_settings_refuse_to_start_without_a_secret_key():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env={**env, "DJANGO_SETTINGS_MODULE": "registry.settings.production"},
    )
    assert result.returncode != 0 and "DJANGO_SECRET_KEY" in result.stderr


def test_web_serves_asgi_with_uvicorn_workers():
    """Live event streams hold no worker: the web service runs the ASGI app under uvicorn workers."""
    import tomllib

    command = " ".join(COMPOSE["services"]["web"]["command"].split())
    # (`serve --server gunicorn` runs gunicorn with registry.asgi_worker.Worker: tests/packaging/test_wheels.py)
    assert "interp-registry-server serve --server gunicorn" in command
    from uvicorn_worker import UvicornWorker

    from registry.asgi_worker import Worker

    assert issubclass(Worker, UvicornWorker) and Worker.CONFIG_KWARGS["server_header"] is False
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("uvicorn") for d in project["dependencies"])
    assert any(d.startswith("uvicorn-worker") for d in project["optional-dependencies"]["production"])
    assert "registry.asgi:application" in (ROOT / "scripts" / "dev").read_text()
