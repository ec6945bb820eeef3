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
    # crashing's "risk" is on the difference scale: a claim on it is absolute
    response = api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease",
                                                 "threshold_unit": "absolute"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["threshold_unit"] == "absolute"


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


# ---------------------------------------------------------------- threshold units and scales


def test_threshold_unit_defaults_to_relative_and_is_shown(api, finding):
    body = api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease", "min_relative_effect": 0.9},
                    format="json").json()
    assert body["threshold_unit"] == "relative"
    assert Claim.objects.get(pk=body["id"]).threshold_unit == "relative"
    listed = api.get(claims_url(finding.pk)).json()
    assert [c["threshold_unit"] for c in listed] == ["relative"]


@pytest.mark.parametrize("effect", [1.0, 1.5])
def test_relative_decrease_of_100_percent_or_more_is_impossible(api, finding, effect):
    before = counts()
    body = assert_error(api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease",
                                                          "min_relative_effect": effect}, format="json"),
                        400, "min_relative_effect")
    assert "impossible" in body["detail"]
    assert counts() == before
    # the same number as an absolute decrease (metric units) is a claim one can make
    response = api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease",
                                                 "min_relative_effect": effect, "threshold_unit": "absolute"},
                        format="json")
    assert response.status_code == 201, response.content


def test_unknown_threshold_unit_is_400(api, finding):
    before = counts()
    assert_error(api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease",
                                                   "threshold_unit": "percent"}, format="json"), 400, "threshold_unit")
    assert counts() == before


def test_relative_claim_on_a_difference_scale_metric_is_400(api, finding, make_experiment):
    make_experiment(finding, plugin="crashing", reproduce=False)  # "risk": difference scale (the default)
    before = counts()
    body = assert_error(api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease",
                                                          "min_relative_effect": 0.5}, format="json"),
                        400, "threshold_unit")
    assert "absolute" in body["detail"]
    assert counts() == before


def _timed_finding(api, make_finding, make_experiment, baselines: list[float]):
    """A finding with the 'timed' test plugin's experiment and succeeded runs whose baseline
    accuracy (a proportion) takes these values."""
    from plugins.registry import register_temporarily
    from registry.reproductions.models import Measurement, Reproduction
    from tests.fakes.plugins import TimedExperiment

    finding = make_finding(title="Timed")
    with register_temporarily(TimedExperiment):
        experiment = make_experiment(finding, plugin="timed", reproduce=False)
    reproduction = Reproduction.objects.create(experiment=experiment, requested_by=finding.created_by,
                                               seeds=list(range(len(baselines))))
    for seed, value in enumerate(baselines):
        run = Run.objects.create(reproduction=reproduction, seed=seed, state=Run.State.SUCCEEDED)
        Measurement.objects.bulk_create([
            Measurement(run=run, arm="baseline", metric="accuracy", value=value),
            Measurement(run=run, arm="intervention", metric="accuracy", value=min(1.0, value + 0.2)),
        ])
    return finding


@pytest.mark.parametrize(("baselines", "allowed"), [([0.5, 0.6, 0.55], True), ([0.5, 0.01, 0.6], False)])
def test_relative_claim_on_a_proportion_needs_baselines_away_from_zero(
    api, make_finding, make_experiment, baselines, allowed
):
    from plugins.registry import register_temporarily
    from tests.fakes.plugins import TimedExperiment

    finding = _timed_finding(api, make_finding, make_experiment, baselines)
    with register_temporarily(TimedExperiment):
        response = api.post(claims_url(finding.pk), {"metric": "accuracy", "direction": "increase",
                                                     "min_relative_effect": 0.2}, format="json")
        if allowed:
            assert response.status_code == 201, response.content
        else:
            body = assert_error(response, 400, "threshold_unit")
            assert "0.05" in body["detail"] or "point" in body["detail"]
            # in points it is fine
            absolute = api.post(claims_url(finding.pk), {"metric": "accuracy", "direction": "increase",
                                                         "min_relative_effect": 0.1, "threshold_unit": "absolute"},
                                format="json")
            assert absolute.status_code == 201, absolute.content


def test_absolute_threshold_on_a_proportion_is_at_most_one(api, make_finding, make_experiment):
    from plugins.registry import register_temporarily
    from tests.fakes.plugins import TimedExperiment

    finding = _timed_finding(api, make_finding, make_experiment, [0.5])
    with register_temporarily(TimedExperiment):
        assert_error(api.post(claims_url(finding.pk), {"metric": "accuracy", "direction": "increase",
                                                       "min_relative_effect": 30, "threshold_unit": "absolute"},
                              format="json"), 400, "min_relative_effect")


def test_patch_threshold_unit_is_validated(api, finding):
    claim = api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease", "min_relative_effect": 2,
                                              "threshold_unit": "absolute"}, format="json").json()
    assert_error(api.patch(f"/api/v1/claims/{claim['id']}/", {"threshold_unit": "relative"}, format="json"),
                 400, "min_relative_effect")
    assert Claim.objects.get(pk=claim["id"]).threshold_unit == "absolute"
    response = api.patch(f"/api/v1/claims/{claim['id']}/", {"threshold_unit": "relative", "min_relative_effect": 0.5},
                         format="json")
    assert response.status_code == 200, response.content
    assert response.json()["threshold_unit"] == "relative"
