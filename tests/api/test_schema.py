"""OpenAPI schema, offline docs page, health and readiness."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db


def test_openapi_schema(anon):
    response = anon.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    import json

    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in ("/api/v1/findings/", "/api/v1/findings/{id}/", "/api/v1/findings/{id}/claims/",
                 "/api/v1/findings/{id}/experiments/", "/api/v1/experiments/{id}/reproductions/",
                 "/api/v1/runs/{id}/", "/api/v1/plugins/", "/api/v1/events/"):
        assert path in paths, path
    assert {"get", "post"} <= set(paths["/api/v1/findings/"])
    parameters = {p["name"] for p in paths["/api/v1/findings/"]["get"]["parameters"]}
    assert {"kind", "status", "tag", "plugin", "author", "q", "axis", "page", "page_size"} <= parameters


def test_schema_yaml(anon):
    response = anon.get("/api/schema/")
    assert response.status_code == 200
    assert b"openapi: 3." in response.content
    assert b"/api/v1/findings/" in response.content


def test_docs_use_only_local_static_files(anon):
    response = anon.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    sources = re.findall(r"<(?:script|link|img)[^>]*?(?:src|href)\s*=\s*[\"']([^\"']+)", html, flags=re.I)
    assert sources, html[:2000]
    for source in sources:
        assert not re.match(r"^(https?:)?//", source), source
    assert not re.search(r"https?://(cdn|unpkg|cdnjs|fonts\.googleapis)", html)
    from django.conf import settings
    from django.contrib.staticfiles import finders

    for source in sources:  # and they are really there, served from this installation
        assert source.startswith(f"/{settings.STATIC_URL.strip('/')}/"), source
        assert finders.find(source.split("/", 2)[2]), source
    assert "/api/schema/" in html


def test_healthz(anon):
    response = anon.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.redis
def test_readyz(anon):
    response = anon.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] == "ok"
    assert "available" in body["checks"]["plugins"]
