"""Security headers: a Content-Security-Policy on the dashboard's pages (and nothing inline for it
to block), HSTS and the proxy settings in production, no Server header from uvicorn."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from django.test import Client

from registry.dashboard.middleware import DEFAULT_POLICY
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_dashboard_pages_carry_the_policy(signed_in, finding, experiment):
    for url in ("/", f"/findings/{finding.pk}/", f"/findings/{finding.pk}/runs/", "/landscape/", "/plugins/"):
        response = signed_in.get(url)
        assert response.status_code == 200, url
        policy = response["Content-Security-Policy"]
        assert policy == DEFAULT_POLICY
        for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'",
                          "frame-ancestors 'none'", "base-uri 'self'", "form-action 'self'"):
            assert directive in policy, (url, directive)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "Content-Security-Policy" in Client().get("/accounts/login/")


def test_dashboard_html_has_nothing_inline_for_the_policy_to_block(signed_in, finding, experiment):
    from registry.reproductions.services import reproduction_request

    reproduction_request(experiment=experiment, user=finding.created_by, n_seeds=1)  # a progress bar
    html = signed_in.get(f"/findings/{finding.pk}/").content.decode()
    assert 'class="progress__fill" data-percent="0"' in html
    assert not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"<style\b", html)
    assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", html))
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers
    assert '"includeIndicatorStyles": false' in html  # htmx injects no <style>


def test_json_and_api_docs_are_left_alone(anon):
    response = anon.get("/api/v1/findings/")
    assert response["Content-Type"] == "application/json"
    assert "Content-Security-Policy" not in response
    assert "Content-Security-Policy" not in anon.get("/api/docs/")  # Swagger UI's own inline script


def test_common_headers_everywhere(anon, client):
    for response in (anon.get("/api/v1/findings/"), client.get("/")):
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Frame-Options"] == "DENY"


PROBE = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_PROXY_SSL_HEADER, "
    "s.SECURE_SSL_REDIRECT, s.SECURE_CONTENT_TYPE_NOSNIFF, s.SECURE_REFERRER_POLICY, sep='|')"
)


def production_settings(**extra: str) -> list[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "registry.settings.production", "DJANGO_SECRET_KEY": "x",
           "DATABASE_URL": "postgres://registry:pw@postgres:5432/registry", "CELERY_BROKER_URL": "redis://redis:6379/0",
           **extra}
    for name in ("DJANGO_HSTS_SECONDS", "DJANGO_SECURE_PROXY_SSL_HEADER", "DJANGO_SECURE_SSL_REDIRECT"):
        if name not in extra:
            env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split("|")


def test_production_sends_hsts_and_takes_the_proxy_settings_from_the_environment():
    assert production_settings() == ["31536000", "True", "None", "False", "True", "same-origin"]
    hsts, _, proxy, redirect, *_ = production_settings(
        DJANGO_HSTS_SECONDS="600", DJANGO_SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
        DJANGO_SECURE_SSL_REDIRECT="true",
    )
    assert (hsts, proxy, redirect) == ("600", "('HTTP_X_FORWARDED_PROTO', 'https')", "True")


def test_hsts_header_on_https_requests(anon, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    response = anon.get("/api/v1/findings/", secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert "Strict-Transport-Security" not in anon.get("/api/v1/findings/")  # never over plain HTTP


def test_no_server_header_from_the_servers():
    from registry.asgi_worker import Worker

    assert Worker.CONFIG_KWARGS["server_header"] is False
    assert "--no-server-header" in (ROOT / "scripts" / "dev").read_text()
    compose = (ROOT / "docker-compose.yml").read_text()
    # compose's web runs `serve --server gunicorn`, whose worker class is this one
    assert "interp-registry-server serve --server gunicorn" in compose
    from registry import server_cli

    assert server_cli.GUNICORN_WORKER_CLASS == "registry.asgi_worker.Worker"
