"""Every 4xx is JSON {"detail": str, "errors": {field: [str]}}; bad input never leaves rows behind
and never produces a 5xx."""

from __future__ import annotations

import json

import pytest

from registry.findings.models import Finding
from tests.api.helpers import FINDINGS, assert_error, counts

pytestmark = pytest.mark.django_db


def post_raw(client, url: str, body: str):
    return client.generic("POST", url, body, content_type="application/json")


@pytest.fixture
def experiments_url(finding) -> str:
    return f"{FINDINGS}{finding.pk}/experiments/"


@pytest.fixture
def reproductions_url(experiment) -> str:
    return f"/api/v1/experiments/{experiment.pk}/reproductions/"


# ---------------------------------------------------------------- findings


def test_missing_title(api):
    before = counts()
    body = assert_error(api.post(FINDINGS, {"kind": "fix"}, format="json"), 400, "title")
    assert "title" in body["detail"]
    assert counts() == before


def test_bad_kind(api):
    before = counts()
    assert_error(api.post(FINDINGS, {"title": "x", "kind": "conjecture"}, format="json"), 400, "kind")
    assert counts() == before


def test_several_fields_are_named_together(api):
    body = assert_error(api.post(FINDINGS, {"visibility": "secret"}, format="json"), 400)
    assert {"title", "kind", "visibility"} <= set(body["errors"])


def test_invalid_json_body(api, finding):
    before = counts()
    assert_error(post_raw(api, FINDINGS, '{"title": "x", "kind": '), 400)
    assert_error(post_raw(api, f"{FINDINGS}{finding.pk}/experiments/", "{not json"), 400)
    assert_error(api.generic("PATCH", f"{FINDINGS}{finding.pk}/", "[", content_type="application/json"), 400)
    assert_error(post_raw(api, FINDINGS, '{"title": NaN, "kind": "fix"}'), 400)
    assert counts() == before


def test_unsupported_media_type_and_method(api, finding):
    assert_error(api.generic("POST", FINDINGS, "title=x", content_type="text/plain"), 415)
    assert_error(api.put("/api/v1/runs/1/", {}, format="json"), 405)


def test_unknown_user_in_authors(api):
    before = counts()
    body = assert_error(api.post(FINDINGS, {"title": "x", "kind": "fix", "authors": ["nobody-here"]},
                                 format="json"), 400, "authors")
    assert "nobody-here" in json.dumps(body)
    assert counts() == before


GARBAGE_FINDING_FIELDS = [
    ("title", ["a", "b"]),
    ("title", {"a": 1}),
    ("title", None),
    ("title", ""),
    ("title", "x" * 10_000),
    ("title", "nul\x00byte"),
    ("kind", ["fix"]),
    ("kind", 5),
    ("kind", None),
    ("summary", ["a"]),
    ("summary", {"a": "b"}),
    ("summary", "nul\x00byte"),
    ("summary", "x" * 1_000_001),
    ("tags", "vision"),
    ("tags", {"a": 1}),
    ("tags", [1.5, {}]),
    ("tags", ["two words"]),
    ("tags", ["x" * 100]),
    ("tags", ["t"] * 1000),
    ("tags", [None]),
    ("references", "doi:10.1/x"),
    ("references", [{"url": "x"}]),
    ("references", ["x" * 10_000]),
    ("references", [None]),
    ("authors", "someone"),
    ("authors", [{}]),
    ("authors", [["a"]]),
    ("authors", ["someone"] * 70_000),
    ("restricted_to", 5),
    ("restricted_to", ["someone"] * 70_000),
    ("builds_on", "1"),
    ("builds_on", 1),
    ("builds_on", ["abc"]),
    ("builds_on", [{}]),
    ("builds_on", [None]),
    ("builds_on", [10**30]),
    ("builds_on", [-1]),
    ("builds_on", [987654321]),
    ("builds_on", [1.5]),
    ("builds_on", list(range(1, 70_001))),
    ("visibility", "secret"),
    ("visibility", []),
    ("embargo_until", "tomorrow"),
    ("embargo_until", 12),
    ("embargo_until", ["2030-01-01"]),
    ("embargo_until", "99999-01-01T00:00:00Z"),
    ("embargo_until", "0001-01-01T00:00:00+05:00"),
    ("xrisk_sheet", "text"),
    ("xrisk_sheet", [1]),
    ("xrisk_sheet", {"dual_use": "perhaps"}),
    ("xrisk_sheet", {"hazards": {"nested": True}}),
    ("xrisk_sheet", {"notes": "nul\x00byte"}),
    ("xrisk_sheet", {"notes": "x" * 10_000}),
]


@pytest.mark.parametrize(("field", "value"), GARBAGE_FINDING_FIELDS, ids=lambda v: repr(v)[:24])
def test_garbage_in_finding_create_is_a_4xx(api, field, value):
    before = counts()
    response = api.post(FINDINGS, {"title": "Garbage test", "kind": "fix", field: value}, format="json")
    assert_error(response, 400, field)
    assert counts() == before


@pytest.mark.parametrize(("field", "value"), GARBAGE_FINDING_FIELDS, ids=lambda v: repr(v)[:24])
def test_garbage_in_finding_patch_is_a_4xx(api, finding, field, value):
    before = counts()
    response = api.patch(f"{FINDINGS}{finding.pk}/", {field: value}, format="json")
    assert_error(response, 400, field)
    assert counts() == before
    assert Finding.objects.get(pk=finding.pk).title == finding.title


@pytest.mark.parametrize("body", ["[1, 2]", '"a string"', "42", "null", "{}", "true"])
def test_non_object_bodies(api, finding, body):
    before = counts()
    for url in (FINDINGS, f"{FINDINGS}{finding.pk}/experiments/", f"{FINDINGS}{finding.pk}/claims/"):
        response = post_raw(api, url, body)
        assert 400 <= response.status_code < 500
        assert_error(response, response.status_code)
    assert counts() == before


# ---------------------------------------------------------------- experiments


def test_unknown_plugin_stores_nothing(api, experiments_url):
    before = counts()
    body = assert_error(api.post(experiments_url, {"plugin": "no_such_plugin"}, format="json"), 400, "plugin")
    assert "echo" in body["detail"]  # the message lists what is available
    assert counts() == before


def test_unavailable_plugin_is_a_400(api, experiments_url, settings):
    from plugins.registry import register_temporarily
    from tests.fakes.plugins import FutureApiExperiment

    before = counts()
    with register_temporarily(FutureApiExperiment):
        assert_error(api.post(experiments_url, {"plugin": "future_api"}, format="json"), 400, "plugin")
    assert counts() == before


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"baseline": "high"}, "params.baseline"),
        ({"bogus": 1}, "params.bogus"),
        ({"noise": -1}, "params.noise"),
        ({"sleep_s": 10_000}, "params.sleep_s"),
        ({"baseline": [1]}, "params.baseline"),
        ({"baseline": None}, "params.baseline"),
        ([1, 2], "params"),
        ("baseline=1", "params"),
        (7, "params"),
    ],
)
def test_invalid_params_name_the_field_and_store_nothing(api, experiments_url, params, field):
    before = counts()
    body = assert_error(api.post(experiments_url, {"plugin": "echo", "params": params}, format="json"), 400, field)
    assert field in body["errors"]
    assert counts() == before


def test_non_finite_param_is_a_400(api, experiments_url):
    before = counts()
    response = post_raw(api, experiments_url, '{"plugin": "echo", "params": {"baseline": 1e400}}')
    assert_error(response, 400, "params")
    response = post_raw(api, experiments_url, '{"plugin": "echo", "params": {"baseline": -1e999}}')
    assert_error(response, 400, "params")
    assert counts() == before


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_param_is_refused_by_the_service_too(finding, value):
    """Callers other than the JSON API (examples, scripts) get a clean error, not a database one."""
    from registry.errors import ApplicationError
    from registry.reproductions.services import experiment_create

    before = counts()
    with pytest.raises(ApplicationError) as error:
        experiment_create(finding=finding, user=finding.created_by, plugin="echo", params={"baseline": value})
    assert error.value.field == "params" and "params.baseline" in error.value.as_detail()["errors"]
    assert counts() == before


def test_nul_character_in_a_string_param_is_a_400(api, experiments_url):
    before = counts()
    response = api.post(experiments_url, {"plugin": "crashing", "params": {"kind": "va\x00lue"}}, format="json")
    assert_error(response, 400, "params")
    assert counts() == before


@pytest.mark.parametrize("constraint", ["not a version", ">=2", "<1.0", "==1.0.0; rm -rf", "x" * 500])
def test_bad_plugin_version_constraint(api, experiments_url, constraint):
    before = counts()
    response = api.post(experiments_url, {"plugin": "echo", "plugin_version_constraint": constraint}, format="json")
    assert_error(response, 400, "plugin_version_constraint")
    assert counts() == before


def test_satisfied_plugin_version_constraint_is_accepted(api, experiments_url):
    response = api.post(experiments_url, {"plugin": "echo", "plugin_version_constraint": ">=1,<2",
                                          "reproduce": False}, format="json")
    assert response.status_code == 201, response.json()


@pytest.mark.parametrize("seeds", [0, -1, 51, 10**30, "many", 2.5, None, [3]])
def test_default_seeds_out_of_range(api, experiments_url, seeds):
    before = counts()
    response = api.post(experiments_url, {"plugin": "echo", "default_seeds": seeds}, format="json")
    assert_error(response, 400, "default_seeds")
    assert counts() == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("plugin", 5),
        ("plugin", ["echo"]),
        ("plugin", None),
        ("plugin", ""),
        ("plugin", "x" * 1000),
        ("plugin", "echo\x00"),
        ("device", "tpu"),
        ("device", ["cpu"]),
        ("time_limit_s", -1),
        ("time_limit_s", 10**30),
        ("time_limit_s", "long"),
        ("reproduce", "perhaps"),
        ("reproduce", [True]),
        ("plugin_version_constraint", [">=1"]),
        ("plugin_version_constraint", {"a": 1}),
    ],
)
def test_garbage_in_experiment_create_is_a_400(api, experiments_url, field, value):
    before = counts()
    response = api.post(experiments_url, {"plugin": "echo", field: value}, format="json")
    assert_error(response, 400, field)
    assert counts() == before


def test_missing_plugin(api, experiments_url):
    assert_error(api.post(experiments_url, {"params": {}}, format="json"), 400, "plugin")


# ---------------------------------------------------------------- reproductions


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"seeds": [1, 1]}, "seeds"),
        ({"seeds": list(range(51))}, "seeds"),
        ({"seeds": [-1]}, "seeds"),
        ({"seeds": [2**31]}, "seeds"),
        ({"seeds": []}, "seeds"),
        ({"seeds": "1,2"}, "seeds"),
        ({"seeds": 3}, "seeds"),
        ({"seeds": [1.5]}, "seeds"),
        ({"seeds": [True]}, "seeds"),
        ({"seeds": [None]}, "seeds"),
        ({"seeds": [[1]]}, "seeds"),
        ({"seeds": list(range(70_000))}, "seeds"),
        ({"seeds": [1, 2], "n_seeds": 2}, "seeds"),
        ({"n_seeds": 0}, "n_seeds"),
        ({"n_seeds": 51}, "n_seeds"),
        ({"n_seeds": 10**30}, "n_seeds"),
        ({"n_seeds": "two"}, "n_seeds"),
        ({"device": "quantum"}, "device"),
    ],
)
def test_bad_reproduction_requests(api, reproductions_url, body, field):
    before = counts()
    assert_error(api.post(reproductions_url, body, format="json"), 400, field)
    assert counts() == before


def test_invalid_json_on_reproduction_request(api, reproductions_url):
    before = counts()
    assert_error(post_raw(api, reproductions_url, '{"seeds": [1,'), 400)
    assert counts() == before


# ---------------------------------------------------------------- claims


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"direction": "decrease"}, "metric"),
        ({"metric": ["risk"], "direction": "decrease"}, "metric"),
        ({"metric": "x" * 1000, "direction": "decrease"}, "metric"),
        ({"metric": "risk"}, "direction"),
        ({"metric": "risk", "direction": "sideways"}, "direction"),
        ({"metric": "risk", "direction": "decrease", "min_relative_effect": "big"}, "min_relative_effect"),
        ({"metric": "risk", "direction": "decrease", "min_relative_effect": [1]}, "min_relative_effect"),
        ({"metric": "risk", "direction": "non_inferior", "margin": "small"}, "margin"),
        ({"metric": "risk", "direction": "decrease", "supersedes": "abc"}, "supersedes"),
        ({"metric": "risk", "direction": "decrease", "supersedes": 10**30}, "supersedes"),
        ({"metric": "risk", "direction": "decrease", "supersedes": 987654321}, "supersedes"),
        ({"metric": "risk", "direction": "decrease", "statement": "x" * 1000}, "statement"),
        ({"metric": "risk", "direction": "decrease", "statement": ["a"]}, "statement"),
    ],
)
def test_garbage_in_claim_create_is_a_400(api, finding, body, field):
    before = counts()
    assert_error(api.post(f"{FINDINGS}{finding.pk}/claims/", body, format="json"), 400, field)
    assert counts() == before


def test_infinite_effect_is_a_400(api, finding):
    before = counts()
    response = post_raw(api, f"{FINDINGS}{finding.pk}/claims/",
                        '{"metric": "risk", "direction": "decrease", "min_relative_effect": 1e400}')
    assert_error(response, 400, "min_relative_effect")
    assert counts() == before


# ---------------------------------------------------------------- query strings and ids


@pytest.mark.parametrize(
    ("url", "status", "field"),
    [
        ("/api/v1/events/?after=abc", 400, "after"),
        ("/api/v1/events/?after=1.5", 400, "after"),
        ("/api/v1/events/?after=%00", 400, "after"),
        ("/api/v1/events/?limit=ten", 400, "limit"),
        ("/api/v1/events/?finding=x", 400, "finding"),
        ("/api/v1/events/?type=finding.created,a%00", 400, "type"),
        ("/api/v1/metrics/?axis=moral", 400, "axis"),
        ("/api/v1/metrics/?plugin=a%00", 400, "plugin"),
        ("/api/v1/findings/?kind=conjecture", 400, "kind"),
        ("/api/v1/findings/?status=%00", 400, "status"),
        ("/api/v1/findings/?axis=moral", 400, "axis"),
        ("/api/v1/findings/?q=%00", 400, "q"),
        ("/api/v1/findings/?tag=%00", 400, "tag"),
        ("/api/v1/findings/?author=a%00b", 400, "author"),
        ("/api/v1/findings/?builds_on=abc", 400, "builds_on"),
        ("/api/v1/findings/?page=abc", 404, None),
        ("/api/v1/findings/?page=99999", 404, None),
        ("/api/v1/findings/99999999999999999999999/", 404, None),
        ("/api/v1/findings/-1/", 404, None),
        ("/api/v1/runs/?state=exploded", 400, "state"),
        ("/api/v1/runs/?seed=abc", 400, "seed"),
        ("/api/v1/runs/99999999999999999999999/", 404, None),
        ("/api/v1/experiments/?finding=abc", 400, "finding"),
        ("/api/v1/plugins/%00/", 404, None),
        ("/api/v1/plugins/no-such-plugin/", 404, None),
    ],
)
def test_bad_query_strings_and_ids(anon, url, status, field):
    assert_error(anon.get(url), status, field)


@pytest.mark.parametrize("url", ["/api/v1/metrics/?plugin=%00", "/api/v1/metrics/?axis=a%00",
                                 "/api/v1/findings/?ordering=%00", "/api/v1/findings/?page_size=%00",
                                 "/api/v1/findings/?ordering=password", "/api/v1/findings/?q=" + "x" * 5000,
                                 "/api/v1/findings/?builds_on=99999999999999999999999",
                                 "/api/v1/findings/?builds_on=1e400",
                                 "/api/v1/runs/?reproduction=99999999999999999999999",
                                 "/api/v1/runs/?seed=99999999999999999999999",
                                 "/api/v1/experiments/?finding=99999999999999999999999",
                                 "/api/v1/events/?after=" + "9" * 5000,
                                 "/api/v1/events/?finding=99999999999999999999999",
                                 "/api/v1/reproductions/?experiment=-5"])
def test_odd_query_strings_never_500(anon, url):
    response = anon.get(url)
    assert response.status_code < 500, response.content[:500]
    if response.status_code >= 400:
        assert_error(response, response.status_code)


# ---------------------------------------------------------------- other encodings


def test_form_encoded_create_works_or_fails_cleanly(api, finding):
    before = counts()
    response = api.post(FINDINGS, {"title": "Form", "kind": "fix", "tags": ["a", "B"], "builds_on": [finding.pk]})
    assert response.status_code == 201, response.content[:500]
    assert response.json()["tags"] == ["a", "b"] and response.json()["builds_on"] == [finding.pk]
    assert counts()["Finding"] == before["Finding"] + 1
    for data in (
        {"title": "Form", "kind": "fix", "xrisk_sheet.dual_use": "maybe"},
        {"title": "Form", "kind": "fix", "xrisk_sheet": "not a dict"},
        {"title": "Form", "kind": "fix", "builds_on": ["abc"]},
        {"title": "Form", "kind": "fix", "embargo_until": "soon"},
    ):
        response = api.post(FINDINGS, data)
        assert 200 <= response.status_code < 500, (data, response.content[:500])
        if response.status_code >= 400:
            assert_error(response, response.status_code)
    response = api.post(f"{FINDINGS}{finding.pk}/experiments/", {"plugin": "echo", "params": "{not json"})
    assert_error(response, 400, "params")


def test_non_object_bodies_elsewhere(api, finding, experiment):
    from registry.findings.services import claim_create

    claim = claim_create(finding=finding, user=finding.created_by, metric="risk", direction="decrease")
    before = counts()
    for body in ("[1, 2]", '"text"', "7", "null"):
        for method, url in (("POST", f"/api/v1/experiments/{experiment.pk}/reproductions/"),
                            ("PATCH", f"/api/v1/claims/{claim.pk}/"), ("PATCH", f"{FINDINGS}{finding.pk}/")):
            response = api.generic(method, url, body, content_type="application/json")
            assert 400 <= response.status_code < 500, (method, url, body, response.content[:300])
            assert_error(response, response.status_code)
    assert counts() == before


def test_unknown_api_path_is_a_json_404(anon):
    response = anon.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "no API endpoint" in response.json()["detail"]


@pytest.mark.parametrize("query", ["tag=a%00b", "plugin=%00", "kind=" + "x" * 300])
def test_landscape_refuses_unstorable_query_text(anon, query):
    response = anon.get(f"/api/v1/landscape/?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()["errors"]
