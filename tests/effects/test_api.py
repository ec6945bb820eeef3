"""Effects over the API: a finding's effects, the landscape, lineage roll-ups, self-reported runs."""

from __future__ import annotations

import json

import pytest

from registry.effects.models import FindingEffects
from registry.effects.selectors import rollup_get
from registry.events.models import Event
from registry.findings.models import Finding, Tag
from registry.reproductions.models import Measurement, Reproduction, Run
from tests.effects.builders import (
    FLAT,
    RISK_DOWN,
    SKILL_UP,
    claim,
    echo_params,
    experiment_for,
    recompute_as_the_worker,
    reproduction,
)
from tests.factories import FindingFactory

pytestmark = pytest.mark.django_db


def _finding(user, values=None, *, kind="fix", tags=(), builds_on=(), **extra) -> Finding:
    finding = FindingFactory(created_by=user, kind=kind, **extra)
    finding.tags.set([Tag.objects.get_or_create(name=t)[0] for t in tags])
    finding.builds_on.set(builds_on)
    if values:
        reproduction(experiment_for(finding), values)
        recompute_as_the_worker(finding.pk)  # what the worker does once the runs finish
    return finding


# ---------------------------------------------------------------- one finding


def test_effects_endpoint_reads_the_cache_and_never_computes(api, user, anon):
    finding = FindingFactory(created_by=user, kind="fix")
    reproduction(experiment_for(finding), {"risk": RISK_DOWN, "skill": FLAT})
    c = claim(finding, "risk", "decrease", min_relative_effect=0.3)
    response = anon.get(f"/api/v1/findings/{finding.pk}/effects/")
    assert response.status_code == 200
    body = response.json()
    # nothing computed yet, and a read does not compute it
    assert (body["finding"], body["status"], body["claims"], body["metrics"]) == (finding.pk, "unreproduced", [], [])
    assert (body["computed_at"], body["pending"], body["error"], body["lean"]) == (None, False, None, "neither")
    assert not FindingEffects.objects.filter(finding=finding).exists()
    recompute_as_the_worker(finding.pk)
    body = anon.get(f"/api/v1/findings/{finding.pk}/effects/").json()
    assert body["claims"][0]["claim"] == c.pk and body["claims"][0]["verdict"] == "confirmed"
    assert body["lean"] == "safety-leaning"
    assert body["pending"] is False and body["computed_at"] and body["error"] is None
    assert api.get(f"/api/v1/claims/{c.pk}/").json()["verdict"] == "confirmed"


def test_effects_follow_a_claim_added_after_the_last_run(api, user):
    finding = _finding(user, {"risk": RISK_DOWN, "skill": FLAT})
    assert api.get(f"/api/v1/findings/{finding.pk}/effects/").json()["claims"] == []
    response = api.post(
        f"/api/v1/findings/{finding.pk}/claims/",
        {"metric": "skill", "direction": "increase", "min_relative_effect": 0.2},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = api.get(f"/api/v1/findings/{finding.pk}/effects/").json()
    assert body["pending"] is True and body["claims"] == []  # being recomputed: the cache as it was
    recompute_as_the_worker(finding.pk)  # the task the claim enqueued on commit
    body = api.get(f"/api/v1/findings/{finding.pk}/effects/").json()
    assert body["pending"] is False
    assert [c["verdict"] for c in body["claims"]] == ["refuted"]
    assert api.get(f"/api/v1/findings/{finding.pk}/").json()["status"] == "failed_to_reproduce"


# ---------------------------------------------------------------- landscape


@pytest.fixture
def landscape_findings(user):
    return {
        "safety": _finding(user, {"risk": RISK_DOWN, "skill": FLAT}, tags=["vision"]),
        "capability": _finding(user, {"risk": FLAT, "skill": SKILL_UP}, kind="observation"),
        "dual": _finding(user, {"risk": RISK_DOWN, "skill": SKILL_UP}, tags=["vision"]),
        "unmeasured": _finding(user, kind="theory"),
    }


def test_landscape_counts_flags_and_correlations(anon, landscape_findings):
    body = anon.get("/api/v1/landscape/").json()
    flags = {p["finding"]: p["lean"] for p in body["findings"]}
    assert flags == {
        landscape_findings["safety"].pk: "safety-leaning",
        landscape_findings["capability"].pk: "capability-leaning",
        landscape_findings["dual"].pk: "dual",
        landscape_findings["unmeasured"].pk: "neither",
    }
    aggregate = body["aggregate"]
    assert aggregate["counts"] == {"safety-leaning": 1, "capability-leaning": 1, "dual": 1, "neither": 1}
    assert (aggregate["n_findings"], aggregate["n_scored"], aggregate["n_unmeasured"]) == (4, 3, 1)
    correlation = aggregate["safety_capability_correlation"]
    assert correlation["n"] == 3 and correlation["method"] == "pearson"
    point = next(p for p in body["findings"] if p["finding"] == landscape_findings["dual"].pk)
    assert point["safety"]["ci_low"] > 0 and point["capability"]["ci_low"] > 0
    (echo,) = body["capabilities_correlation"]
    assert echo["plugin"] == "echo"
    (risk,) = echo["metrics"]
    assert risk["metric"] == "risk" and risk["capability_metrics"] == ["skill"]
    assert risk["observations"] == 3 * 5 * 2  # every arm of every registry run
    assert risk["correlation"]["method"] == "spearman"
    assert "too few runs" not in (risk["correlation"]["warning"] or "")
    assert body["lineage"] == [
        {
            "finding": landscape_findings["unmeasured"].pk,
            "title": landscape_findings["unmeasured"].title,
            "counts": {"descendants": 0, "lean": dict.fromkeys(aggregate["counts"], 0), "status": {}, "by_depth": {}},
        }
    ]
    json.dumps(body, allow_nan=False)


def test_landscape_filters(anon, landscape_findings):
    by_tag = anon.get("/api/v1/landscape/?tag=vision").json()
    assert {p["finding"] for p in by_tag["findings"]} == {
        landscape_findings["safety"].pk,
        landscape_findings["dual"].pk,
    }
    by_kind = anon.get("/api/v1/landscape/?kind=observation").json()
    assert [p["finding"] for p in by_kind["findings"]] == [landscape_findings["capability"].pk]
    by_plugin = anon.get("/api/v1/landscape/?plugin=echo").json()
    assert by_plugin["aggregate"]["n_findings"] == 3
    assert anon.get("/api/v1/landscape/?plugin=nothing").json()["aggregate"]["n_findings"] == 0


def test_landscape_rejects_an_unknown_kind(anon):
    response = anon.get("/api/v1/landscape/?kind=rumour")
    assert response.status_code == 400
    body = response.json()
    assert "rumour" in body["detail"] and "kind" in body["errors"]


def test_landscape_hides_restricted_findings(anon, client_for, user, other_user):
    hidden = _finding(user, {"risk": RISK_DOWN, "skill": FLAT}, visibility="restricted")
    assert hidden.pk not in [p["finding"] for p in anon.get("/api/v1/landscape/").json()["findings"]]
    assert hidden.pk not in [p["finding"] for p in client_for(other_user).get("/api/v1/landscape/").json()["findings"]]
    assert hidden.pk in [p["finding"] for p in client_for(user).get("/api/v1/landscape/").json()["findings"]]


# ---------------------------------------------------------------- lineage roll-up


def test_rollup_over_a_three_level_lineage(anon, user):
    theory = _finding(user, kind="theory")
    fix = _finding(user, {"risk": RISK_DOWN, "skill": FLAT}, builds_on=[theory])
    follow_up = _finding(user, {"risk": FLAT, "skill": SKILL_UP}, kind="observation", builds_on=[fix])
    also = _finding(user, {"risk": RISK_DOWN, "skill": SKILL_UP}, builds_on=[theory, follow_up])
    secret = _finding(user, {"risk": FLAT, "skill": SKILL_UP}, builds_on=[follow_up], visibility="restricted")
    _finding(user, {"risk": RISK_DOWN, "skill": FLAT})  # unrelated

    body = anon.get(f"/api/v1/findings/{theory.pk}/rollup/").json()
    assert [(d["finding"], d["depth"], d["lean"]) for d in body["descendants"]] == [
        (fix.pk, 1, "safety-leaning"),
        (also.pk, 1, "dual"),  # shortest path: it builds on the theory directly
        (follow_up.pk, 2, "capability-leaning"),
    ]
    counts = body["counts"]
    assert counts["descendants"] == 3
    assert counts["lean"] == {"safety-leaning": 1, "capability-leaning": 1, "dual": 1, "neither": 0}
    assert counts["by_depth"] == {"1": 2, "2": 1}
    assert body["descendants"][0]["safety"]["significant"] is True

    as_author = rollup_get(theory, user=user)
    assert secret.pk in [d["finding"] for d in as_author["descendants"]]
    assert rollup_get(follow_up)["counts"]["descendants"] == 1  # anonymous: `also` only


def test_rollup_is_404_for_an_invisible_or_missing_finding(anon, user):
    hidden = _finding(user, kind="theory", visibility="restricted")
    assert anon.get(f"/api/v1/findings/{hidden.pk}/rollup/").status_code == 404
    assert anon.get("/api/v1/findings/999999/rollup/").status_code == 404


# ---------------------------------------------------------------- self-reported runs


def _body(**overrides) -> dict:
    body = {
        "seed": 7,
        "measurements": {
            "baseline": {"risk": 1.0, "skill": 1.0, "width": 3.0},
            "intervention": {"risk": 0.5, "skill": 1.0, "width": 3.0},
        },
        "params": {},
        "hardware": "NVIDIA A100-SXM4-80GB",
        "environment": {"torch": "2.4.0", "cuda": "12.4"},
    }
    body.update(overrides)
    return body


@pytest.fixture
def experiment(user):
    return experiment_for(FindingFactory(created_by=user))


def _nothing_stored() -> None:
    assert not Reproduction.objects.exists()
    assert not Measurement.objects.exists()
    assert not Event.objects.filter(type="run.finished").exists()


def test_self_reported_run_is_stored_and_counted(api, user, experiment):
    c = claim(experiment.finding, "risk", "decrease", min_relative_effect=0.3)
    url = f"/api/v1/experiments/{experiment.pk}/self-reported-runs/"
    for seed, (base, after) in enumerate(RISK_DOWN[:3]):
        measurements = {
            "baseline": {"risk": base, "skill": 1.0, "width": 3.0},
            "intervention": {"risk": after, "skill": 1.0, "width": 3.0},
        }
        response = api.post(url, _body(seed=seed, measurements=measurements, params=echo_params()), format="json")
        assert response.status_code == 201, response.json()
    body = response.json()
    assert body["self_reported"] is True and body["state"] == "succeeded"
    assert body["hardware"] == "NVIDIA A100-SXM4-80GB" and body["plugin_version"] == "1.0.0"
    assert len(body["measurements"]) == 6
    reproduction_ = Reproduction.objects.get(pk=body["reproduction"])
    assert (reproduction_.source, reproduction_.requested_by, reproduction_.seeds) == ("self_reported", user, [2])
    event = Event.objects.filter(type="run.finished").last()
    assert event.payload["self_reported"] is True and event.payload["run"] == body["id"]
    assert api.get(f"/api/v1/findings/{experiment.finding_id}/effects/").json()["pending"] is True
    recompute_as_the_worker(experiment.finding_id)
    effects = api.get(f"/api/v1/findings/{experiment.finding_id}/effects/").json()
    assert effects["claims"][0]["claim"] == c.pk
    assert (effects["claims"][0]["verdict"], effects["claims"][0]["evidence"]) == ("confirmed", "self_reported")
    assert effects["evidence_rungs"] == ["self_reported"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {
                "measurements": {
                    "baseline": {"risk": 1, "skill": 1, "width": 3, "speed": 2},
                    "intervention": {"risk": 1, "skill": 1, "width": 3},
                }
            },
            "measurements",
        ),
        ({"measurements": {"baseline": {"risk": 1, "skill": 1, "width": 3}}}, "measurements"),
        (
            {
                "measurements": {
                    "baseline": {"risk": 1, "skill": 1},
                    "intervention": {"risk": 1, "skill": 1, "width": 3},
                }
            },
            "measurements",
        ),
        (
            {
                "measurements": {
                    "baseline": {"risk": "high", "skill": 1, "width": 3},
                    "intervention": {"risk": 1, "skill": 1, "width": 3},
                }
            },
            "measurements.baseline.risk",
        ),
        ({"params": {"effect": -0.1}}, "params"),
        ({"params": {"noise": -1}}, "params.noise"),
        ({"params": {"unknown": 1}}, "params.unknown"),
        ({"seed": -1}, "seed"),
        ({"hardware": ""}, "hardware"),
        ({"environment": ["not", "a", "dict"]}, "environment"),
    ],
    ids=[
        "undeclared-metric",
        "missing-arm",
        "missing-metric",
        "not-a-number",
        "other-params",
        "invalid-params",
        "unknown-param",
        "seed",
        "hardware",
        "environment",
    ],
)
def test_self_reported_run_validation(api, experiment, change, field):
    response = api.post(f"/api/v1/experiments/{experiment.pk}/self-reported-runs/", _body(**change), format="json")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert field in body["errors"], body
    assert body["detail"]
    _nothing_stored()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_self_reported_non_finite_value_names_the_field(api, experiment, literal):
    raw = json.dumps(_body()).replace('"risk": 0.5', f'"risk": {literal}')
    response = api.post(
        f"/api/v1/experiments/{experiment.pk}/self-reported-runs/", raw, content_type="application/json"
    )
    assert response.status_code == 400, response.json()
    body = response.json()
    assert "measurements" in body["errors"]
    assert "risk" in body["detail"] and "not finite" in body["detail"]
    _nothing_stored()


def test_self_reported_runs_are_for_authors_only(client_for, other_user, anon, experiment):
    url = f"/api/v1/experiments/{experiment.pk}/self-reported-runs/"
    assert client_for(other_user).post(url, _body(), format="json").status_code == 403
    assert anon.post(url, _body(), format="json").status_code in (401, 403)
    _nothing_stored()


def test_self_reported_run_on_an_invisible_experiment_is_404(client_for, other_user, user):
    hidden = experiment_for(FindingFactory(created_by=user, visibility="restricted"))
    response = client_for(other_user).post(
        f"/api/v1/experiments/{hidden.pk}/self-reported-runs/", _body(), format="json"
    )
    assert response.status_code == 404
    _nothing_stored()


def test_registry_runs_then_outrank_the_self_reported_ones(api, experiment):
    c = claim(experiment.finding, "risk", "decrease", min_relative_effect=0.3)
    url = f"/api/v1/experiments/{experiment.pk}/self-reported-runs/"
    for seed in range(3):
        assert (
            api.post(
                url,
                _body(
                    seed=seed,
                    measurements={
                        "baseline": {"risk": 1.0 + seed / 10, "skill": 1.0, "width": 3.0},
                        "intervention": {"risk": 0.5 + seed / 10, "skill": 1.0, "width": 3.0},
                    },
                ),
                format="json",
            ).status_code
            == 201
        )
    reproduction(experiment, {"risk": FLAT, "skill": FLAT, "width": FLAT})
    from registry.effects.services import finding_effects_recompute

    data = finding_effects_recompute(finding_id=experiment.finding_id)
    entry = next(e for e in data["claims"] if e["claim"] == c.pk)
    assert (entry["verdict"], entry["evidence"]) == ("refuted", "registry")
    registry_runs = Run.objects.filter(reproduction__source="registry").values_list("pk", flat=True)
    assert set(entry["run_ids"]) == set(registry_runs)


def test_openapi_schema_documents_the_new_endpoints(anon):
    response = anon.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    assert "/api/v1/landscape/" in paths
    assert "/api/v1/findings/{id}/rollup/" in paths
    assert "/api/v1/experiments/{id}/self-reported-runs/" in paths


# ---------------------------------------------------------------- summary, and the detail behind a link


def _keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def _finding_with_reproductions(user, n: int) -> Finding:
    """A claim on risk, and ``n`` reproductions of one run each (as runs reported one request at
    a time arrive)."""
    finding = FindingFactory(created_by=user, kind="fix")
    experiment = experiment_for(finding)
    claim(finding, "risk", "decrease", min_relative_effect=0.3)
    for seed in range(n):
        base, after = RISK_DOWN[seed % len(RISK_DOWN)]
        reproduction(experiment, {"risk": [(base, after)], "skill": [(1.0, 1.0)], "width": [(3.0, 3.0)]},
                     seeds=[seed])
    return finding


def test_the_effects_summary_does_not_grow_with_runs_and_the_detail_is_behind_a_link(api, anon, user):
    sizes = {}
    for n in (4, 40):
        finding = _finding_with_reproductions(user, n)
        full = recompute_as_the_worker(finding.pk)
        response = anon.get(f"/api/v1/findings/{finding.pk}/effects/")
        assert response.status_code == 200
        summary = response.json()
        sizes[n] = len(response.content)
        assert not _keys(summary) & {"run_ids", "by_reproduction", "reproductions"}
        assert summary["n_runs"] == n and summary["metrics"][0]["n_reproductions"] == n
        claim_ = summary["claims"][0]
        assert (claim_["verdict"], claim_["n_runs"], claim_["experiments"][0]["n_reproductions"]) == ("confirmed", n, n)
        assert summary["detail_url"].endswith(f"/api/v1/findings/{finding.pk}/effects/?detail=runs")
        # the stored row holds the summary; the detail column the rest
        stored = FindingEffects.objects.get(finding=finding)
        assert "run_ids" not in stored.data and stored.detail
        detailed = anon.get(summary["detail_url"])
        assert detailed.status_code == 200
        body = detailed.json()
        assert body["run_ids"] == full["run_ids"] and len(body["run_ids"]) == n
        assert body["metrics"][0]["by_reproduction"] == full["metrics"][0]["by_reproduction"]
        assert body["claims"][0]["reproductions"] == full["claims"][0]["reproductions"]
        assert body["claims"][0]["experiments"][0]["run_ids"] == full["claims"][0]["experiments"][0]["run_ids"]
        assert (body["claims"][0]["verdict"], body["pending"]) == ("confirmed", False)
    # ten times the runs and reproductions: the summary about the same size (digits of ids and numbers)
    assert sizes[40] < 1.2 * sizes[4], sizes


def test_effects_detail_parameter_is_checked_and_hidden_findings_stay_404(client_for, anon, user, other_user):
    finding = _finding_with_reproductions(user, 3)
    recompute_as_the_worker(finding.pk)
    response = anon.get(f"/api/v1/findings/{finding.pk}/effects/?detail=everything")
    assert response.status_code == 400 and "detail" in response.json()["errors"]
    hidden = FindingFactory(created_by=user, visibility="restricted")
    for client in (anon, client_for(other_user)):
        assert client.get(f"/api/v1/findings/{hidden.pk}/effects/?detail=runs").status_code == 404
    assert client_for(user).get(f"/api/v1/findings/{hidden.pk}/effects/?detail=runs").status_code == 200
    # before any recompute: the empty summary, and an empty detail
    body = client_for(user).get(f"/api/v1/findings/{hidden.pk}/effects/?detail=runs").json()
    assert (body["n_runs"], body["claims"], body["run_ids"]) == (0, [], [])
