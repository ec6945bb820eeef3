"""The reproductions rate limit: on the API's run-queuing requests and the dashboard's form, with
the counts in the configured cache (Redis in production: shared by every web process)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from django.core.cache import caches
from django.test import Client

from registry.api.throttling import ReproductionRateThrottle
from registry.reproductions.models import Reproduction
from tests.api.helpers import FINDINGS, assert_error
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db


def history_key(user) -> str:
    return ReproductionRateThrottle.cache_format % {"scope": "reproductions", "ident": user.pk}


@pytest.fixture
def two_per_hour(monkeypatch, user) -> Iterator[None]:
    monkeypatch.setattr(ReproductionRateThrottle, "rate", "2/hour", raising=False)
    caches["default"].delete(history_key(user))
    yield
    caches["default"].delete(history_key(user))


def test_the_third_api_request_is_a_429_with_retry_after(api, user, experiment, two_per_hour):
    url = f"/api/v1/experiments/{experiment.pk}/reproductions/"
    for _ in range(2):
        assert api.post(url, {"n_seeds": 1}, format="json").status_code == 202
    assert api.get(url).status_code == 200  # reads are not counted
    before = Reproduction.objects.count()
    response = api.post(url, {"n_seeds": 1}, format="json")
    body = assert_error(response, 429)
    assert 0 < int(response["Retry-After"]) <= 3600
    assert "throttled" in body["detail"]
    assert Reproduction.objects.count() == before
    # creating an experiment (which queues its first reproduction) counts in the same scope
    response = api.post(f"{FINDINGS}{experiment.finding_id}/experiments/", {"plugin": "echo"}, format="json")
    assert_error(response, 429)


def test_the_dashboard_form_shares_the_counts(user, experiment, two_per_hour, api):
    client = Client()
    client.force_login(user)
    form_url = f"/findings/{experiment.finding_id}/reproductions/"
    response = client.post(form_url, {"experiment": experiment.pk, "n_seeds": 1})
    assert response.status_code == 302, response.content[:500]
    api_url = f"/api/v1/experiments/{experiment.pk}/reproductions/"
    assert api.post(api_url, {"n_seeds": 1}, format="json").status_code == 202
    before = Reproduction.objects.count()
    response = client.post(form_url, {"experiment": experiment.pk, "n_seeds": 1})
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 3600
    assert "Too many reproduction requests" in response.content.decode()
    assert Reproduction.objects.count() == before


def test_the_throttle_history_lives_in_the_configured_cache(api, user, experiment, two_per_hour, settings):
    api.post(f"/api/v1/experiments/{experiment.pk}/reproductions/", {"n_seeds": 1}, format="json")
    history = caches["default"].get(history_key(user))
    assert isinstance(history, list) and len(history) == 1
    if settings.CELERY_BROKER_URL.startswith("redis"):  # the test settings put the cache there
        assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
        assert settings.CACHES["default"]["KEY_PREFIX"].startswith("test")


def test_an_unreachable_cache_lets_requests_through(api, experiment, monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(ReproductionRateThrottle, "rate", "1/hour", raising=False)
    monkeypatch.setattr(caches["default"], "get", down)
    url = f"/api/v1/experiments/{experiment.pk}/reproductions/"
    for _ in range(3):
        assert api.post(url, {"n_seeds": 1}, format="json").status_code == 202


def test_production_counts_in_redis():
    probe = (
        "import django; django.setup(); from django.conf import settings as s; "
        "c = s.CACHES['default']; print(c['BACKEND'], c['LOCATION']); "
        "print(' '.join(s.REST_FRAMEWORK['DEFAULT_THROTTLE_CLASSES'])); "
        "print(s.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['reproductions'])"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "registry.settings.production", "DJANGO_SECRET_KEY": "x",
           "DATABASE_URL": "postgres://registry:pw@postgres:5432/registry", "CELERY_BROKER_URL": "redis://redis:6379/0"}
    env.pop("CACHE_URL", None)
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 0, result.stderr
    backend, throttles, rate = result.stdout.splitlines()
    assert backend == "django.core.cache.backends.redis.RedisCache redis://redis:6379/1"
    assert "registry.api.throttling.UserRateThrottle" in throttles
    assert rate == "60/hour"
    # a broker that is not Redis needs CACHE_URL: no silent per-process counting
    env["CELERY_BROKER_URL"] = "amqp://rabbit:5672//"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode != 0 and "CACHE_URL" in result.stderr


def test_compose_gives_the_web_a_redis_cache():
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["web"]["environment"]["CACHE_URL"] == "redis://redis:6379/1"


def test_rereproducing_a_finding_counts_in_the_reproductions_scope(api, user, experiment, two_per_hour):
    url = f"{FINDINGS}{experiment.finding_id}/rereproduce/"
    for _ in range(2):
        assert api.post(url, format="json").status_code == 202
    before = Reproduction.objects.count()
    response = api.post(url, format="json")
    assert_error(response, 429)
    assert 0 < int(response["Retry-After"]) <= 3600
    assert Reproduction.objects.count() == before
