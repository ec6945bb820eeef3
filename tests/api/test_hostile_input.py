"""The hostile-input corpus: every bad body gets a JSON 4xx (naming the field where there is one)
on every write endpoint, never a 5xx nor an HTML page, and leaves nothing behind."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from registry.events.models import Subscription
from registry.findings.models import Finding
from tests.api.helpers import FINDINGS, assert_error, counts

pytestmark = pytest.mark.django_db

DEEP = 10_000


def every_count() -> dict[str, int]:
    return {**counts(), "Subscription": Subscription.objects.count()}


@pytest.fixture
def endpoints(finding, experiment) -> list[tuple[str, str, dict]]:
    """(method, url, a valid body) for each write endpoint under test."""
    return [
        ("POST", FINDINGS, {"title": "Hostile", "kind": "fix"}),
        ("POST", f"{FINDINGS}{finding.pk}/experiments/", {"plugin": "echo", "reproduce": False}),
        ("POST", f"/api/v1/experiments/{experiment.pk}/reproductions/", {"n_seeds": 1}),
        ("POST", f"/api/v1/experiments/{experiment.pk}/self-reported-runs/",
         {"seed": 1, "measurements": {}, "params": {}, "hardware": "cpu", "environment": {}}),
        ("POST", "/api/v1/subscriptions/", {"name": "hostile", "channel": "webhook",
                                            "url": "http://127.0.0.1:9/hook"}),
        ("PATCH", f"{FINDINGS}{finding.pk}/", {"title": "Hostile"}),
    ]


# the field each endpoint's bad value is put in: one it stores as text or JSON
TEXT_FIELD = {
    FINDINGS: "title",
    "experiments/": "params",
    "reproductions/": "device",
    "self-reported-runs/": "environment",
    "subscriptions/": "name",
}


def text_field(method: str, url: str) -> str:
    if method == "PATCH":
        return "summary"
    return next(field for suffix, field in TEXT_FIELD.items() if url.endswith(suffix))


def send(client, method: str, url: str, body: str | bytes, content_type: str = "application/json"):
    return client.generic(method, url, body, content_type=content_type)


def check(endpoints, api, make_body, field: str | None | type = None, status: int = 400):
    """Each endpoint answers a JSON ``status`` naming ``field`` (``text_field`` for ``str``)
    and changes nothing."""
    before = every_count()
    title = Finding.objects.order_by("pk").values_list("title", flat=True).first()
    for method, url, valid in endpoints:
        name = text_field(method, url) if field is str else field
        response = send(api, method, url, make_body(method, url, valid, name))
        assert response.status_code < 500, (method, url, response.status_code, response.content[:300])
        assert_error(response, status, name)
    assert every_count() == before
    assert Finding.objects.order_by("pk").values_list("title", flat=True).first() == title


# ---------------------------------------------------------------- nesting


def test_deep_nesting_is_a_400(api, endpoints):
    check(endpoints, api, lambda m, u, v, f: "[" * DEEP + "]" * DEEP, None)
    check(endpoints, api, lambda m, u, v, f: '{"a":' * DEEP + "1" + "}" * DEEP, "a")


def test_deep_nesting_inside_a_field_names_it(api, endpoints):
    def body(method, url, valid, field):
        return json.dumps({**valid, field: "@"}).replace('"@"', "[" * DEEP + "]" * DEEP)

    check(endpoints, api, body, str)


def test_depth_limit_is_a_setting(api, finding, settings):
    settings.API_MAX_JSON_DEPTH = 3
    url = f"{FINDINGS}{finding.pk}/experiments/"
    ok = {"plugin": "echo", "reproduce": False, "params": {}}
    assert send(api, "POST", url, json.dumps(ok)).status_code == 201
    response = send(api, "POST", url, json.dumps({**ok, "params": {"a": [[1]]}}))
    body = assert_error(response, 400, "params")
    assert "deeper than 3" in body["detail"]


def test_brackets_inside_strings_do_not_count_as_nesting(api, endpoints):
    before = Finding.objects.count()
    response = api.post(FINDINGS, {"title": "[" * 500 + "{" * 500, "kind": "fix"}, format="json")
    assert response.status_code == 400  # too long a title, not a nesting error
    assert "deeper" not in response.json()["detail"] and "title" in response.json()["errors"]
    response = api.post(FINDINGS, {"title": "[{" * 40, "kind": "fix"}, format="json")
    assert response.status_code == 201, response.content
    assert Finding.objects.count() == before + 1


# ---------------------------------------------------------------- characters that cannot be stored


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "a\\ud83dz", "\\u0000", "nul\\u0000byte"])
def test_unstorable_characters_in_text_are_a_400_naming_the_field(api, endpoints, escape):
    def body(method, url, valid, field):
        value = {"k": "@X@"} if field in ("environment", "params") else "@X@"
        return json.dumps({**valid, field: value}).replace("@X@", escape)

    check(endpoints, api, body, str)


@pytest.mark.parametrize("escape", ["\\ud800", "\\u0000"])
def test_unstorable_characters_in_a_key_are_a_400(api, endpoints, escape):
    def body(method, url, valid, field):
        return json.dumps({**valid, "@KEY@": 1}).replace("@KEY@", f"bad{escape}key")

    check(endpoints, api, body, None)


def test_self_reported_environment_names_the_nested_field(api, experiment):
    url = f"/api/v1/experiments/{experiment.pk}/self-reported-runs/"
    body = '{"seed": 1, "measurements": {}, "params": {}, "hardware": "cpu", "environment": {"python": "\\ud800"}}'
    before = every_count()
    response = send(api, "POST", url, body)
    assert_error(response, 400, "environment.python")
    assert every_count() == before


def test_nul_in_a_form_field_is_a_400_naming_it(api):
    before = every_count()
    response = api.post(FINDINGS, {"title": "nul\x00byte", "kind": "fix"})  # multipart
    assert_error(response, 400, "title")
    response = api.generic("POST", FINDINGS, "title=nul%00byte&kind=fix",
                           content_type="application/x-www-form-urlencoded")
    assert_error(response, 400, "title")
    assert every_count() == before


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_non_finite_numbers_are_a_400_naming_the_field(api, finding, experiment, literal):
    before = every_count()
    cases = [
        (f"{FINDINGS}{finding.pk}/experiments/", f'{{"plugin": "echo", "params": {{"baseline": {literal}}}}}',
         "params"),
        (f"{FINDINGS}{finding.pk}/claims/",
         f'{{"metric": "risk", "direction": "decrease", "min_relative_effect": {literal}}}', "min_relative_effect"),
        (f"/api/v1/experiments/{experiment.pk}/reproductions/", f'{{"n_seeds": {literal}}}', "n_seeds"),
        (FINDINGS, f'{{"title": {literal}, "kind": "fix"}}', "title"),
        (f"/api/v1/experiments/{experiment.pk}/self-reported-runs/",
         f'{{"seed": 1, "measurements": {{"treatment": {{"risk": {literal}}}}}, "params": {{}}, "hardware": "cpu"}}',
         "measurements"),
    ]
    for url, body, field in cases:
        assert_error(send(api, "POST", url, body), 400, field)
    assert every_count() == before


@pytest.mark.parametrize("number", ["99999999999999999999999", "-99999999999999999999999", "1" + "0" * 4000])
def test_huge_integers_are_a_400_naming_the_field(api, finding, experiment, number):
    before = every_count()
    cases = [
        (f"/api/v1/experiments/{experiment.pk}/reproductions/", f'{{"n_seeds": {number}}}', "n_seeds"),
        (f"/api/v1/experiments/{experiment.pk}/reproductions/", f'{{"seeds": [{number}]}}', "seeds"),
        (f"{FINDINGS}{finding.pk}/experiments/", f'{{"plugin": "echo", "time_limit_s": {number}}}', "time_limit_s"),
        (FINDINGS, f'{{"title": "x", "kind": "fix", "builds_on": [{number}]}}', "builds_on"),
        ("/api/v1/subscriptions/", f'{{"name": "n", "channel": "webhook", "url": "http://127.0.0.1:9/", '
                                   f'"finding": {number}}}', "finding"),
    ]
    for url, body, field in cases:
        assert_error(send(api, "POST", url, body), 400, field)
    assert every_count() == before


# ---------------------------------------------------------------- size


def test_a_10_mb_body_is_a_413(api, endpoints):
    big = json.dumps({"title": "x" * (10 * 1024 * 1024)})
    check(endpoints, api, lambda m, u, v, f: big, None, status=413)


def test_a_body_over_the_limit_is_a_413_even_without_json(api, finding, settings):
    settings.API_MAX_BODY_BYTES = 1000
    before = every_count()
    response = api.generic("POST", FINDINGS, "title=" + "x" * 2000 + "&kind=fix",
                           content_type="application/x-www-form-urlencoded")
    assert_error(response, 413)
    response = send(api, "POST", FINDINGS, json.dumps({"title": "x" * 2000, "kind": "fix"}))
    body = assert_error(response, 413)
    assert "1000 bytes" in body["detail"]
    assert every_count() == before


def test_a_million_seeds_are_a_413_at_the_default_limit(api, experiment):
    before = every_count()
    body = json.dumps({"seeds": list(range(1_000_000))})
    assert len(body) < 8 * 1024 * 1024
    response = send(api, "POST", f"/api/v1/experiments/{experiment.pk}/reproductions/", body)
    # 6.9 MB: over the body limit (413) by default; with a larger limit, the seeds' own limit
    assert_error(response, 413)
    assert every_count() == before


def test_a_million_seeds_under_the_size_limit_name_seeds(api, experiment, settings):
    settings.API_MAX_BODY_BYTES = settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024 * 1024
    before = every_count()
    body = json.dumps({"seeds": list(range(1_000_000))})
    response = send(api, "POST", f"/api/v1/experiments/{experiment.pk}/reproductions/", body)
    assert_error(response, 400, "seeds")
    assert every_count() == before


def test_too_many_form_fields_is_a_json_4xx(api):
    before = every_count()
    body = "&".join(f"f{i}=1" for i in range(5000))
    response = api.generic("POST", FINDINGS, body, content_type="application/x-www-form-urlencoded")
    assert_error(response, 400)
    assert every_count() == before


def test_unreadable_content_length_is_a_json_400(api):
    response = api.generic("POST", FINDINGS, "{}", content_type="application/json", CONTENT_LENGTH="lots")
    assert_error(response, 400)


# ---------------------------------------------------------------- content types and malformed JSON


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("text/plain", "title=x", 415),
        ("application/xml", "<finding/>", 415),
        ("image/png", "\x89PNG", 415),
        ("application/json", "{not json", 400),
        ("application/json", '{"title": "x",}', 400),
        ("application/json", '{"title": "x"} trailing', 400),
        ("application/json", "\ufeff{}", 400),
        ("application/json; charset=latin-1", '{"title": "caf\xe9", "kind": "fix"}', None),
        ("application/json; charset=no-such-charset", "{}", None),  # Django ignores it: UTF-8
    ],
)
def test_bad_content_types_and_malformed_json(api, endpoints, content_type, body, status):
    before = every_count()
    for method, url, _valid in endpoints:
        response = send(api, method, url, body.encode("latin-1", "replace"), content_type)
        assert response.status_code < 500, (method, url, response.content[:300])
        if status is not None:
            assert_error(response, status)
        elif response.status_code >= 400:
            assert_error(response, response.status_code)
    if status is not None:
        assert every_count() == before


def test_invalid_utf8_is_a_400(api, endpoints):
    check(endpoints, api, lambda m, u, v, f: b'{"title": "\xff\xfe"}', None)


# ---------------------------------------------------------------- Django's own error pages under /api/


def test_django_error_pages_under_the_api_are_json(user):
    client = Client(raise_request_exception=False)
    response = client.get("/api/v1/findings/", HTTP_HOST="evil.example")  # DisallowedHost
    assert_error(response, 400)
    response = client.get("/findings/", HTTP_HOST="evil.example")
    assert response.status_code == 400 and not response["Content-Type"].startswith("application/json")
    assert_error(client.get("/api/v1/no-such-endpoint/"), 404)
    client.force_login(user)
    assert_error(client.generic("PUT", "/api/v1/runs/1/"), 405)


def test_csrf_failure_under_the_api_is_json(user):
    from registry.urls import csrf_failure

    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    before = every_count()
    response = client.post("/api/v1/findings/", {"title": "x", "kind": "fix"})
    assert_error(response, 403)
    assert every_count() == before
    # the view itself, as CSRF_FAILURE_VIEW: JSON under /api/, Django's page elsewhere
    from django.conf import settings as django_settings
    from django.test import RequestFactory

    assert django_settings.CSRF_FAILURE_VIEW == "registry.urls.csrf_failure"
    assert_error(readable(csrf_failure(RequestFactory().post("/api/v1/findings/"), reason="no token")), 403)
    page = csrf_failure(RequestFactory().post("/accounts/login/"), reason="no token")
    assert page.status_code == 403 and page["Content-Type"].startswith("text/html")


def readable(response):
    response.json = lambda: json.loads(response.content)
    return response


def test_handlers_answer_json_under_the_api():
    from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
    from django.test import RequestFactory

    from registry.urls import bad_request, permission_denied, server_error

    request = RequestFactory().post("/api/v1/findings/")
    assert_error(readable(bad_request(request, RequestDataTooBig("big"))), 413)
    assert_error(readable(bad_request(request, TooManyFieldsSent("many"))), 400)
    assert_error(readable(bad_request(request, SuspiciousOperation("odd"))), 400)
    assert_error(readable(permission_denied(request, Exception("no"))), 403)
    response = server_error(request)
    assert response.status_code == 500 and response["Content-Type"] == "application/json"


def test_database_refusals_are_a_400_not_a_500():
    from django.db import DataError

    from registry.api.errors import exception_handler

    response = exception_handler(DataError("invalid byte sequence"), {})
    assert response.status_code == 400 and response.data["errors"] == {}
    assert exception_handler(OverflowError("Python int too large to convert to SQLite INTEGER"), {}).status_code == 400
