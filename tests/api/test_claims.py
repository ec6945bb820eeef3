"""Claims: pre-registered statements, editable until evidence exists, then only versioned."""

from __future__ import annotations

import pytest

from registry.findings.models import Claim
from registry.reproductions.models import Run
from tests.api.helpers import FINDINGS, assert_error, counts, event_types

pytestmark = pytest.mark.django_db


def claims_url(finding_id: int) -> str:
    return f"{FINDINGS}{finding_id}/claims/"


def test_create_claims(api, finding):
    decrease = api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease",
                                                 "min_relative_effect": 0.9, "statement": "Risk falls by 90%"},
                        format="json")
    assert decrease.status_code == 201, decrease.json()
    body = decrease.json()
    assert body["finding"] == finding.pk and body["metric"] == "risk" and body["direction"] == "decrease"
    assert body["min_relative_effect"] == 0.9 and body["margin"] is None
    assert body["version"] == 1 and body["is_current"] is True and body["supersedes"] is None
    assert body["verdict"] is None

    increase = api.post(claims_url(finding.pk), {"metric": "skill", "direction": "increase"}, format="json")
    assert increase.status_code == 201
    assert increase.json()["min_relative_effect"] == 0.0

    non_inferior = api.post(claims_url(finding.pk), {"metric": "skill", "direction": "non_inferior", "margin": 0.05},
                            format="json")
    assert non_inferior.status_code == 201
    assert non_inferior.json()["margin"] == 0.05 and non_inferior.json()["min_relative_effect"] is None

    listed = api.get(claims_url(finding.pk)).json()
    assert [c["metric"] for c in listed] == ["risk", "skill", "skill"]
    assert len(api.get(f"{FINDINGS}{finding.pk}/").json()["claims"]) == 3
    assert event_types(finding.pk).count("claim.created") == 3
    assert api.get(f"/api/v1/claims/{body['id']}/").json()["statement"] == "Risk falls by 90%"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metric": "skill", "direction": "non_inferior"}, "margin"),
        ({"metric": "skill", "direction": "non_inferior", "margin": -0.1}, "margin"),
        ({"metric": "risk", "direction": "decrease", "min_relative_effect": -0.9}, "min_relative_effect"),
        ({"metric": "risk", "direction": "increase", "margin": 0.05}, "margin"),
        ({"metric": "no_such_metric", "direction": "decrease"}, "metric"),
    ],
)
def test_claim_validation(api, finding, body, field):
    before = counts()
    assert_error(api.post(claims_url(finding.pk), body, format="json"), 400, field)
    assert counts() == before


def test_metric_must_be_declared_by_the_findings_plugins(api, finding, make_experiment):
    make_experiment(finding, plugin="crashing", reproduce=False)  # declares "risk" only
    before = counts()
    # "skill" exists (the echo plugin declares it) but not in this finding's experiments
    body = assert_error(api.post(claims_url(finding.pk), {"metric": "skill", "direction": "increase"},
                                 format="json"), 400, "metric")
    assert "skill" in body["detail"]
    assert counts() == before
    assert api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease"},
                    format="json").status_code == 201


def test_only_authors_may_add_claims(client_for, other_user, anon, finding):
    before = counts()
    assert_error(client_for(other_user).post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease"},
                                             format="json"), 403)
    response = anon.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease"}, format="json")
    assert response.status_code in (401, 403)
    assert counts() == before


@pytest.fixture
def claim(api, finding) -> Claim:
    response = api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease",
                                                 "min_relative_effect": 0.5}, format="json")
    return Claim.objects.get(pk=response.json()["id"])


def test_patch_before_any_run(api, claim):
    response = api.patch(f"/api/v1/claims/{claim.pk}/", {"min_relative_effect": 0.8, "statement": "Sharper"},
                         format="json")
    assert response.status_code == 200, response.json()
    claim.refresh_from_db()
    assert claim.min_relative_effect == 0.8 and claim.statement == "Sharper" and claim.version == 1


def test_patch_to_non_inferior_needs_a_margin(api, claim):
    assert_error(api.patch(f"/api/v1/claims/{claim.pk}/", {"direction": "non_inferior"}, format="json"), 400,
                 "margin")
    response = api.patch(f"/api/v1/claims/{claim.pk}/", {"direction": "non_inferior", "margin": 0.1}, format="json")
    assert response.status_code == 200
    assert response.json()["margin"] == 0.1 and response.json()["min_relative_effect"] is None
    assert Claim.objects.get(pk=claim.pk).direction == "non_inferior"


def test_patch_by_another_user_is_refused(client_for, other_user, claim):
    assert_error(client_for(other_user).patch(f"/api/v1/claims/{claim.pk}/", {"statement": "x"}, format="json"), 403)
    assert Claim.objects.get(pk=claim.pk).statement == ""


def test_patch_garbage(api, claim):
    for body, field in (({"direction": "up"}, "direction"), ({"min_relative_effect": "big"}, "min_relative_effect"),
                        ({"min_relative_effect": -1}, "min_relative_effect"), ({"statement": "x" * 600}, "statement")):
        assert_error(api.patch(f"/api/v1/claims/{claim.pk}/", body, format="json"), 400, field)
    claim.refresh_from_db()
    assert claim.direction == "decrease" and claim.min_relative_effect == 0.5


def test_patch_after_runs_exist_is_409(api, claim, make_experiment):
    make_experiment(claim.finding)
    assert Run.objects.filter(reproduction__experiment__finding=claim.finding).exists()
    body = assert_error(api.patch(f"/api/v1/claims/{claim.pk}/", {"min_relative_effect": 0.1}, format="json"), 409)
    assert "supersedes" in body["detail"]
    assert Claim.objects.get(pk=claim.pk).min_relative_effect == 0.5


def test_new_version_supersedes_the_old(api, claim, make_experiment):
    make_experiment(claim.finding)
    url = claims_url(claim.finding_id)
    response = api.post(url, {"metric": "risk", "direction": "decrease", "min_relative_effect": 0.3,
                              "supersedes": claim.pk}, format="json")
    assert response.status_code == 201, response.json()
    new = response.json()
    assert new["version"] == 2 and new["supersedes"] == claim.pk and new["is_current"] is True
    claim.refresh_from_db()
    assert claim.is_current is False
    assert [c["id"] for c in api.get(url).json()] == [new["id"]]
    history = api.get(url, {"history": "1"}).json()
    assert [(c["id"], c["version"], c["is_current"]) for c in history] == [
        (claim.pk, 1, False), (new["id"], 2, True)
    ]
    assert [c["id"] for c in api.get(f"{FINDINGS}{claim.finding_id}/").json()["claims"]] == [new["id"]]
    # an old version cannot be superseded twice
    before = counts()
    assert_error(api.post(url, {"metric": "risk", "direction": "decrease", "supersedes": claim.pk}, format="json"),
                 400, "supersedes")
    assert counts() == before


def test_cannot_supersede_a_claim_of_another_finding(api, claim, make_finding):
    other = make_finding(title="Other")
    before = counts()
    response = api.post(claims_url(other.pk), {"metric": "risk", "direction": "decrease", "supersedes": claim.pk},
                        format="json")
    assert_error(response, 400, "supersedes")
    assert counts() == before
    assert Claim.objects.get(pk=claim.pk).is_current is True


def test_claims_of_restricted_findings_are_hidden(client_for, make_finding, other_user):
    from registry.findings.services import claim_create

    secret = make_finding(owner=other_user, title="Secret", visibility="restricted")
    claim = claim_create(finding=secret, user=other_user, metric="risk", direction="decrease")
    assert_error(client_for(None).get(f"/api/v1/claims/{claim.pk}/"), 404)
    assert client_for(other_user).get(f"/api/v1/claims/{claim.pk}/").status_code == 200
