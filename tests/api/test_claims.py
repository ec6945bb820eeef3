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


def test_a_stranger_learns_nothing_from_validation(client_for, other_user, claim, experiment):
    stranger = client_for(other_user)
    response = stranger.patch(f"/api/v1/claims/{claim.pk}/", {"direction": "up"}, format="json")
    assert_error(response, 403)  # the permission is checked before the body is read
    response = stranger.post(
        f"/api/v1/experiments/{experiment.pk}/self-reported-runs/", {"seed": "not a seed"}, format="json"
    )
    assert_error(response, 403)


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


def test_superseding_a_hidden_claim_answers_like_an_absent_one(client_for, other_user, make_finding, user):
    from tests.factories import FindingFactory

    hidden = FindingFactory(created_by=other_user, visibility="restricted")  # other_user: its only author
    secret = Claim.objects.create(finding=hidden, metric="risk", direction="decrease", min_relative_effect=0.5,
                                  created_by=other_user)
    mine = make_finding(title="Mine")
    client = client_for(user)
    bodies = []
    for target in (secret.pk, secret.pk + 10_000):
        response = client.post(claims_url(mine.pk), {"metric": "risk", "direction": "decrease", "supersedes": target},
                               format="json")
        assert response.status_code == 400
        bodies.append(response.json()["errors"]["supersedes"][0].replace(str(target), "ID"))
    assert bodies[0] == bodies[1]
    assert Claim.objects.get(pk=secret.pk).is_current is True


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


# ---------------------------------------------------------------- vacuous and malformed thresholds


@pytest.mark.parametrize(
    ("metric", "margin"),
    [("risk", 1e308), ("risk", 1.0), ("skill", 1.0), ("skill", 1e308)],  # lower- and higher-is-better
)
def test_relative_non_inferiority_margin_must_be_below_one(api, finding, metric, margin):
    before = counts()
    body = assert_error(api.post(claims_url(finding.pk), {"metric": metric, "direction": "non_inferior",
                                                          "margin": margin}, format="json"), 400, "margin")
    assert "not worse by more than" in body["detail"] and "below 1" in body["detail"]
    assert counts() == before
    response = api.post(claims_url(finding.pk), {"metric": metric, "direction": "non_inferior", "margin": 0.99},
                        format="json")
    assert response.status_code == 201, response.content


def test_patch_to_a_vacuous_margin_is_refused(api, claim):
    assert_error(api.patch(f"/api/v1/claims/{claim.pk}/", {"direction": "non_inferior", "margin": 1e308},
                           format="json"), 400, "margin")
    claim.refresh_from_db()
    assert claim.direction == "decrease" and claim.margin is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"direction": "decrease", "min_relative_effect": 1e13}, "min_relative_effect"),
        ({"direction": "increase", "min_relative_effect": 1e308}, "min_relative_effect"),
        ({"direction": "non_inferior", "margin": 1e13}, "margin"),
    ],
)
def test_absurd_absolute_thresholds_are_refused(api, finding, make_experiment, body, field):
    make_experiment(finding, plugin="crashing", reproduce=False)  # "risk": difference scale
    before = counts()
    response = api.post(claims_url(finding.pk), {"metric": "risk", "threshold_unit": "absolute", **body},
                        format="json")
    assert "1e+12" in assert_error(response, 400, field)["detail"]
    assert counts() == before
    at_the_cap = {**body, field: 1e12}
    response = api.post(claims_url(finding.pk), {"metric": "risk", "threshold_unit": "absolute", **at_the_cap},
                        format="json")
    assert response.status_code == 201, response.content


@pytest.mark.parametrize("field", ["min_relative_effect", "margin"])
def test_non_finite_thresholds_are_refused(api, finding, field):
    direction = "non_inferior" if field == "margin" else "decrease"
    before = counts()
    for number in ("1e309", "-1e309"):  # JSON numbers Python reads as +-inf
        raw = f'{{"metric": "risk", "direction": "{direction}", "threshold_unit": "absolute", "{field}": {number}}}'
        assert_error(api.generic("POST", claims_url(finding.pk), raw, content_type="application/json"), 400, field)
    assert counts() == before


def test_relative_increase_above_a_millionfold_is_refused(api, finding):
    before = counts()
    body = assert_error(api.post(claims_url(finding.pk), {"metric": "skill", "direction": "increase",
                                                          "min_relative_effect": 1e6 * 1.5}, format="json"),
                        400, "min_relative_effect")
    assert "millionfold" in body["detail"]
    assert counts() == before
    response = api.post(claims_url(finding.pk), {"metric": "skill", "direction": "increase",
                                                 "min_relative_effect": 1e6}, format="json")
    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    "body",
    [
        {"metric": "risk", "direction": "decrease", "min_relative_effect": True},
        {"metric": "risk", "direction": "decrease", "min_relative_effect": False},
        {"metric": "skill", "direction": "non_inferior", "margin": True},
        {"metric": "skill", "direction": "non_inferior", "margin": False},
    ],
)
def test_booleans_are_not_thresholds(api, finding, claim, body):
    field = "margin" if "margin" in body else "min_relative_effect"
    before = counts()
    assert "boolean" in assert_error(api.post(claims_url(finding.pk), body, format="json"), 400, field)["detail"]
    assert counts() == before
    patch = {k: v for k, v in body.items() if k != "metric"}
    assert_error(api.patch(f"/api/v1/claims/{claim.pk}/", patch, format="json"), 400, field)
    claim.refresh_from_db()
    assert claim.direction == "decrease" and claim.min_relative_effect == 0.5 and claim.margin is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"metric": "skill", "direction": "increase", "min_relative_effect": True}, "min_relative_effect"),
        ({"metric": "risk", "direction": "non_inferior", "margin": True}, "margin"),
        ({"metric": "skill", "direction": "increase", "min_relative_effect": float("inf")}, "min_relative_effect"),
        ({"metric": "risk", "direction": "non_inferior", "margin": float("nan")}, "margin"),
    ],
)
def test_booleans_and_non_finite_numbers_are_refused_by_the_service_too(user, finding, fields, field):
    from registry.errors import ApplicationError
    from registry.findings.services import claim_create

    with pytest.raises(ApplicationError) as refused:
        claim_create(finding=finding, user=user, **fields)
    assert refused.value.field == field
    assert "bool" in refused.value.message or "finite" in refused.value.message
    assert not Claim.objects.filter(finding=finding).exists()


def test_negative_zero_is_stored_as_zero(api, finding, claim):
    import math

    created = api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease",
                                                "min_relative_effect": -0.0}, format="json")
    assert created.status_code == 201, created.content
    stored = Claim.objects.get(pk=created.json()["id"]).min_relative_effect
    assert stored == 0.0 and math.copysign(1.0, stored) == 1.0
    assert math.copysign(1.0, created.json()["min_relative_effect"]) == 1.0
    margin = api.post(claims_url(finding.pk), {"metric": "skill", "direction": "non_inferior", "margin": -0.0},
                      format="json")
    assert margin.status_code == 201, margin.content
    assert math.copysign(1.0, Claim.objects.get(pk=margin.json()["id"]).margin) == 1.0
    patched = api.patch(f"/api/v1/claims/{claim.pk}/", {"min_relative_effect": -0.0}, format="json")
    assert patched.status_code == 200, patched.content
    claim.refresh_from_db()
    assert math.copysign(1.0, claim.min_relative_effect) == 1.0


# ---------------------------------------------------------------- PATCH refuses what it cannot change


def test_patch_of_the_metric_is_refused(api, claim):
    body = assert_error(api.patch(f"/api/v1/claims/{claim.pk}/", {"metric": "skill"}, format="json"), 400, "metric")
    assert "cannot be changed" in body["errors"]["metric"][0] and "supersede" in body["errors"]["metric"][0]
    # together with an editable field nothing is applied either
    assert_error(api.patch(f"/api/v1/claims/{claim.pk}/", {"metric": "skill", "statement": "x"}, format="json"),
                 400, "metric")
    claim.refresh_from_db()
    assert claim.metric == "risk" and claim.statement == ""


@pytest.mark.parametrize(
    "field",
    ["supersedes", "finding", "version", "is_current", "verdict", "created_at", "id", "colour"],
)
def test_patch_of_read_only_or_unknown_fields_is_refused(api, claim, field):
    before = counts()
    body = assert_error(api.patch(f"/api/v1/claims/{claim.pk}/", {field: 7}, format="json"), 400, field)
    assert "statement" in body["errors"][field][0] or "supersede" in body["errors"][field][0] \
        or "post a new claim" in body["errors"][field][0]
    assert counts() == before
    claim.refresh_from_db()
    assert claim.version == 1 and claim.is_current is True and claim.supersedes_id is None


def test_patch_of_the_metric_by_others_changes_nothing(client_for, other_user, anon, claim):
    response = anon.patch(f"/api/v1/claims/{claim.pk}/", {"metric": "skill"}, format="json")
    assert response.status_code in (401, 403)
    response = client_for(other_user).patch(f"/api/v1/claims/{claim.pk}/", {"metric": "skill"}, format="json")
    assert response.status_code in (400, 403)
    assert client_for(other_user).patch(f"/api/v1/claims/{claim.pk}/", {"statement": "x"},
                                        format="json").status_code == 403
    claim.refresh_from_db()
    assert claim.metric == "risk" and claim.statement == ""


# ---------------------------------------------------------------- claims stay decidable when experiments are added


def experiments_url(finding_id: int) -> str:
    return f"{FINDINGS}{finding_id}/experiments/"


def test_an_experiment_whose_plugin_cannot_decide_a_claim_is_refused(api, finding):
    # before any experiment an absolute claim on "risk" stands: "crashing" declares it on the difference scale
    claim = api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease", "min_relative_effect": 2,
                                              "threshold_unit": "absolute"}, format="json")
    assert claim.status_code == 201, claim.content
    claim_id = claim.json()["id"]
    before = counts()
    # "echo" declares "risk" on the ratio scale: an absolute claim on it could never be decided
    body = assert_error(api.post(experiments_url(finding.pk), {"plugin": "echo", "reproduce": False}, format="json"),
                        400, "plugin")
    message = body["errors"]["plugin"][0]
    assert f"claim {claim_id}" in message and "'risk'" in message and "ratio" in message
    assert f"supersedes={claim_id}" in message and "threshold_unit" in message
    assert body["claim"] == claim_id and body["metric"] == "risk"
    assert counts() == before
    # a plugin that can decide it is accepted; and once the claim is superseded by a relative one, echo is too
    crashing = api.post(experiments_url(finding.pk), {"plugin": "crashing", "reproduce": False}, format="json")
    assert crashing.status_code == 201, crashing.content


def test_superseding_the_claim_lets_the_experiment_in(api, finding):
    claim = api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease", "min_relative_effect": 2,
                                              "threshold_unit": "absolute"}, format="json").json()
    assert_error(api.post(experiments_url(finding.pk), {"plugin": "echo", "reproduce": False}, format="json"),
                 400, "plugin")
    new = api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease", "min_relative_effect": 0.5,
                                            "supersedes": claim["id"]}, format="json")
    assert new.status_code == 201, new.content
    response = api.post(experiments_url(finding.pk), {"plugin": "echo", "reproduce": False}, format="json")
    assert response.status_code == 201, response.content
    # and now "crashing" (difference scale) cannot decide the relative claim
    body = assert_error(api.post(experiments_url(finding.pk), {"plugin": "crashing", "reproduce": False},
                                 format="json"), 400, "plugin")
    assert f"claim {new.json()['id']}" in body["detail"]


def test_a_vacuous_margin_made_before_experiments_is_caught_when_one_is_added(api, finding, user):
    # a claim stored before this rule existed (written directly): adding an experiment names it
    stored = Claim.objects.create(finding=finding, metric="risk", direction="non_inferior", margin=1e308,
                                  created_by=user)
    body = assert_error(api.post(experiments_url(finding.pk), {"plugin": "echo", "reproduce": False}, format="json"),
                        400, "plugin")
    assert f"claim {stored.pk}" in body["detail"] and "below 1" in body["detail"]


def test_experiments_of_others_are_refused_before_claims_are_checked(client_for, other_user, anon, finding, api):
    api.post(claims_url(finding.pk), {"metric": "risk", "direction": "decrease", "min_relative_effect": 2,
                                      "threshold_unit": "absolute"}, format="json")
    before = counts()
    assert_error(client_for(other_user).post(experiments_url(finding.pk), {"plugin": "echo", "reproduce": False},
                                             format="json"), 403)
    assert anon.post(experiments_url(finding.pk), {"plugin": "echo", "reproduce": False},
                     format="json").status_code in (401, 403)
    assert counts() == before
