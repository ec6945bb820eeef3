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


# --- The schema matches the API (issue 10) ------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in ("get", "put", "post", "patch", "delete"):
                yield path, method, operation


def _content(operation: dict, code: str) -> dict:
    return operation["responses"][code]["content"]


def test_schema_validates_without_warnings():
    from django.core.management import call_command

    # --fail-on-warn: any warning or error of drf-spectacular (or of the OpenAPI validator) fails
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_every_operation_has_a_description_a_resource_tag_and_the_shared_errors(schema):
    tags = {"findings", "claims", "experiments", "reproductions", "runs", "effects", "events", "subscriptions",
            "tokens", "quotas", "authors", "plugins", "operations"}
    assert {t["name"] for t in schema["tags"]} == tags
    operations = list(_operations(schema))
    assert len(operations) >= 55
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        assert operation.get("description", "").strip(), where
        assert len(operation["tags"]) == 1 and operation["tags"][0] in tags, where
        if not path.startswith("/api/"):
            continue
        codes = set(operation["responses"])
        assert {"400", "401", "503"} <= codes, where
        if "{" in path:
            assert "404" in codes, where
        if method != "get":
            assert "403" in codes, where
        if method in ("post", "put", "patch"):
            assert {"413", "415"} <= codes, where
            if "requestBody" in operation:  # JSON only (the form parsers serve the browsable API)
                assert set(operation["requestBody"]["content"]) == {"application/json"}, where
        if method == "post":
            assert {"409", "422"} <= codes, where
            assert "Idempotency-Key" in {p["name"] for p in operation["parameters"] if p["in"] == "header"}, where
        for code, response in operation["responses"].items():
            if code.startswith(("4", "5")) and path.startswith("/api/"):
                schema_ref = response["content"]["application/json"]["schema"]["$ref"]
                expected = "RateLimited" if code == "429" else "Error"
                assert schema_ref == f"#/components/schemas/{expected}", (where, code)
                if code in ("429", "503"):
                    assert "Retry-After" in response["headers"], (where, code)
    error = schema["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"detail", "errors"}
    assert error["properties"]["errors"]["additionalProperties"] == {"type": "array", "items": {"type": "string"}}
    limited = schema["components"]["schemas"]["RateLimited"]["properties"]
    assert {"detail", "errors", "quota", "limit", "used", "requested", "retry_after"} <= set(limited)


def test_the_measured_mismatches_are_gone(schema):
    paths = schema["paths"]
    # POSTs to claims and experiments: 201 with one object (not 200 with a page)
    for path, component in (("/api/v1/findings/{id}/claims/", "Claim"),
                            ("/api/v1/findings/{id}/experiments/", "Experiment")):
        post = paths[path]["post"]["responses"]
        assert "200" not in post and _content(paths[path]["post"], "201")["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{component}"}
        # their lists are bare lists, not pages, without the findings' filters
        get = paths[path]["get"]
        assert _content(get, "200")["application/json"]["schema"] == {
            "type": "array", "items": {"$ref": f"#/components/schemas/{component}"}}
        assert not {"page", "page_size", "kind", "ordering"} & {p["name"] for p in get["parameters"]}
    assert {p["name"] for p in paths["/api/v1/findings/{id}/claims/"]["get"]["parameters"]} == {"id", "history"}
    # the experiment's reproductions: GET a bare list with 200; POST 202 one reproduction, 429 with the quota
    reproductions = paths["/api/v1/experiments/{id}/reproductions/"]
    assert set(reproductions["get"]["responses"]) & {"200", "202"} == {"200"}
    assert _content(reproductions["get"], "200")["application/json"]["schema"] == {
        "type": "array", "items": {"$ref": "#/components/schemas/Reproduction"}}
    assert _content(reproductions["post"], "202")["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Reproduction"}
    assert _content(reproductions["post"], "429")["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RateLimited"}
    # the lists that are pages are documented as pages
    for path in ("/api/v1/findings/", "/api/v1/experiments/", "/api/v1/reproductions/", "/api/v1/runs/",
                 "/api/v1/subscriptions/", "/api/v1/subscriptions/{id}/deliveries/"):
        ref = _content(paths[path]["get"], "200")["application/json"]["schema"]["$ref"]
        assert ref.startswith("#/components/schemas/Paginated"), path
    # and the bare ones as bare lists
    for path in ("/api/v1/tokens/", "/api/v1/plugins/", "/api/v1/metrics/", "/api/v1/me/invitations/"):
        assert _content(paths[path]["get"], "200")["application/json"]["schema"]["type"] == "array", path
    # effects/ is not a finding
    effects = _content(paths["/api/v1/findings/{id}/effects/"]["get"], "200")["application/json"]["schema"]
    assert "$ref" not in effects and effects["type"] == "object"
    # seeds: the real limit (50), at least one; n_seeds and default_seeds too
    request = schema["components"]["schemas"]["ReproductionRequestRequest"]["properties"]
    assert request["seeds"]["maxItems"] == 50 and request["seeds"]["minItems"] == 1
    assert request["n_seeds"]["maximum"] == 50
    assert schema["components"]["schemas"]["ExperimentRequest"]["properties"]["default_seeds"]["maximum"] == 50
    # the Atom feed and the SSE stream, with their media types
    feed = paths["/api/v1/events/feed.atom"]["get"]
    assert set(_content(feed, "200")) == {"application/atom+xml"}
    assert set(_content(paths["/api/v1/events/stream"]["get"], "200")) == {"text/event-stream"}
    # artifacts: image/png as served (and the other types plugins store)
    assert "image/png" in _content(paths["/api/v1/artifacts/{id}/download/"]["get"], "200")
    # 404, 400, 403 and 409 where they happen
    assert {"400", "403", "404", "409"} <= set(paths["/api/v1/claims/{id}/"]["patch"]["responses"])
    assert {"403", "404"} <= set(paths["/api/v1/users/{username}/quota/"]["get"]["responses"])
    assert {"200", "201"} & set(paths["/api/v1/tokens/"]["post"]["responses"]) == {"201"}


def test_the_documented_shapes_are_what_the_api_answers(api, user, finding, experiment):
    """A few answers checked against the schema itself (schemathesis does all of them in
    tests/api/test_schemathesis.py)."""
    import jsonschema
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)

    def nullable(node):  # OpenAPI 3.0's "nullable" as JSON Schema
        if isinstance(node, dict):
            node = {k: nullable(v) for k, v in node.items()}
            if node.pop("nullable", False):
                node = {"anyOf": [node, {"type": "null"}]}
            return node
        return [nullable(v) for v in node] if isinstance(node, list) else node

    schema = nullable(schema)

    def check(path: str, method: str, status: int, response) -> None:
        assert response.status_code == status, response.content[:500]
        documented = schema["paths"][path][method]["responses"][str(status)]["content"]["application/json"]
        resolver_schema = {**documented["schema"], "components": schema["components"]}
        jsonschema.validate(response.json(), resolver_schema)

    api.force_authenticate(user)
    check("/api/v1/findings/{id}/claims/", "post", 201, api.post(
        f"/api/v1/findings/{finding.pk}/claims/", {"metric": "risk", "direction": "decrease"}, format="json"))
    check("/api/v1/findings/{id}/claims/", "get", 200, api.get(f"/api/v1/findings/{finding.pk}/claims/"))
    check("/api/v1/findings/{id}/experiments/", "get", 200, api.get(f"/api/v1/findings/{finding.pk}/experiments/"))
    check("/api/v1/experiments/{id}/reproductions/", "get", 200,
          api.get(f"/api/v1/experiments/{experiment.pk}/reproductions/"))
    check("/api/v1/experiments/{id}/reproductions/", "post", 400,
          api.post(f"/api/v1/experiments/{experiment.pk}/reproductions/", {"seeds": list(range(51))}, format="json"))
    check("/api/v1/findings/{id}/", "get", 404, api.get("/api/v1/findings/999999999/"))


def test_what_schemathesis_found_stays_fixed(api, anon, finding):
    """Answers that disagreed with the schema: each is now what it documents."""
    # page_size: a whole number (capped at 200), else a 400 naming it; a page that is not one, or past the
    # end, a 404
    for query in ("page_size=abc", "page_size=0", "page_size=-3"):
        response = api.get(f"/api/v1/findings/?{query}")
        assert response.status_code == 400 and "page_size" in response.json()["errors"], query
    for query in ("page=99", "page=0", "page=true"):
        assert api.get(f"/api/v1/findings/?{query}").status_code == 404, query
    # integer filters are integers; history is true or false
    assert "builds_on" in api.get("/api/v1/findings/?builds_on=0.5").json()["errors"]
    assert "history" in api.get(f"/api/v1/findings/{finding.pk}/claims/?history=null").json()["errors"]
    # JSON types as documented: no number read as text, no text as a boolean, no object as a list
    for body, field in (({"tags": [0]}, "tags.0"), ({"xrisk_sheet": {"notes": 5}}, "xrisk_sheet.notes"),
                        ({"xrisk_sheet": {"dual_use": "yes"}}, "xrisk_sheet.dual_use"),
                        ({"builds_on": {}}, "builds_on")):
        response = api.patch(f"/api/v1/findings/{finding.pk}/", body, format="json")
        assert response.status_code == 400 and field in response.json()["errors"], (body, response.json())
    # the feed and the probes: GET and HEAD only, a JSON 405 otherwise
    for path in ("/api/v1/events/feed.atom", "/healthz", "/readyz"):
        response = anon.post(path)
        assert response.status_code == 405 and response["Allow"] == "GET, HEAD", path
    assert anon.post("/api/v1/events/feed.atom").json()["errors"] == {}
