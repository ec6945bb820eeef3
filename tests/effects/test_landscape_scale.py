"""The landscape at scale (issue 11, reads at scale): aggregates over every visible finding from
the stored per-finding summary columns (no JSON read per finding), one bounded page of points, the
capabilities correlation over a capped number of runs and reused while nothing changed, and a
constant number of SQL queries whatever the number of findings and theories (API and dashboard)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient
from scipy import stats as scipy_stats

from registry.effects import selectors, stats
from registry.effects.models import FindingEffects
from registry.findings.models import Finding, Tag
from tests.effects.builders import experiment_for, recompute_as_the_worker, reproduction
from tests.factories import FindingFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SMALL, LARGE = 2, 10


def _pairs(start: float, ratio: float, jitter: float) -> list[tuple[float, float]]:
    return [(start * (1 + jitter * k), start * ratio * (1 + jitter * (2 - k))) for k in range(4)]


def _measured(user, i: int, *, kind: str = "fix", tags=("scale",), builds_on=(), **extra) -> Finding:
    """A finding whose effects differ with ``i``: risk falls and skill rises by varying amounts."""
    finding = FindingFactory(created_by=user, kind=kind, title=f"Measured {i}", **extra)
    finding.tags.set([Tag.objects.get_or_create(name=t)[0] for t in tags])
    finding.builds_on.set(builds_on)
    values = {"risk": _pairs(1.0, 0.9 - 0.07 * (i % 9), 0.02 + 0.01 * (i % 3)),
              "skill": _pairs(1.0, 1.0 + 0.05 * ((i * 7) % 11), 0.015)}
    reproduction(experiment_for(finding), values)
    recompute_as_the_worker(finding.pk)
    return finding


def _expected(findings: list[Finding]) -> dict:
    """The aggregates recomputed here from each finding's effects JSON, as the landscape did before."""
    data = {row.finding_id: row.data for row in FindingEffects.objects.filter(finding__in=findings)}
    leans = {lean: 0 for lean in selectors.LEANS}
    both = []
    for finding in sorted(findings, key=lambda f: f.pk):
        effects = data.get(finding.pk) or {}
        leans[effects.get("lean", "neither")] += 1
        scores = effects.get("axis_scores") or {}
        if (scores.get("safety") or {}).get("score") is not None and (scores.get("capability") or {}).get(
            "score"
        ) is not None:
            both.append((finding.pk, scores["safety"], scores["capability"]))

    def se(score: dict) -> float | None:
        n = score.get("n_seeds") or 0
        if score.get("ci_low") is None or n < 2:
            return None
        q = float(scipy_stats.t.ppf(0.5 + float(score.get("confidence") or 0.95) / 2.0, n - 1))
        return (score["ci_high"] - score["ci_low"]) / (2.0 * q)

    progress = stats.differential_progress(
        [s["score"] for _, s, _ in both], [c["score"] for _, _, c in both], [se(s) for _, s, _ in both], min_n=5
    )
    correlation = stats.correlation_with_interval(
        [s["score"] for _, s, _ in both], [c["score"] for _, _, c in both], method="pearson", min_n=5
    )
    return {"leans": leans, "progress": progress, "correlation": correlation.to_dict(),
            "residuals": {pk: p for (pk, _, _), p in zip(both, progress.points, strict=True)}}


def test_aggregates_cover_every_finding_while_points_come_a_page_at_a_time(anon, user):
    findings = [_measured(user, i) for i in range(7)] + [FindingFactory(created_by=user, kind="theory")]
    expected = _expected(findings)
    seen, bodies = [], []
    url = "/api/v1/landscape/?page_size=3"
    while url:
        response = anon.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        bodies.append(body)
        assert len(body["findings"]) <= 3
        seen += [p["finding"] for p in body["findings"]]
        url = body["page_info"]["next"]
    assert seen == sorted(f.pk for f in findings)  # every finding once, by id
    assert [b["page_info"]["page"] for b in bodies] == [1, 2, 3]
    assert bodies[1]["page_info"]["previous"].endswith("page=1") and bodies[0]["page_info"]["previous"] is None
    for body in bodies:  # the same aggregates on every page
        aggregate = body["aggregate"]
        assert aggregate == bodies[0]["aggregate"] | {"differential_progress": aggregate["differential_progress"]}
        assert aggregate["n_findings"] == 8 and aggregate["n_scored"] == 7 and aggregate["n_unmeasured"] == 1
        assert aggregate["counts"] == expected["leans"]
        assert aggregate["safety_capability_correlation"] == pytest.approx(expected["correlation"])
        progress = aggregate["differential_progress"]
        assert progress["n"] == 7
        for key in ("slope", "intercept", "slope_ci_low", "slope_ci_high", "residual_sd"):
            assert progress[key] == pytest.approx(getattr(expected["progress"], key)), key
        on_page = [p["finding"] for p in body["findings"]]
        assert [e["finding"] for e in progress["findings"]] == [pk for pk in on_page if pk in expected["residuals"]]
        for entry in progress["findings"]:
            point = expected["residuals"][entry["finding"]]
            assert entry["residual"] == pytest.approx(point.residual)
            assert entry["ci_low"] == pytest.approx(point.ci_low) and entry["ci_high"] == pytest.approx(point.ci_high)
        above = sum(1 for p in expected["progress"].points if p.ci_low is not None and p.ci_low > 0)
        below = sum(1 for p in expected["progress"].points if p.ci_high is not None and p.ci_high < 0)
        assert (progress["n_above"], progress["n_below"]) == (above, below)
        assert f"{above} finding(s) buy safety beyond that trend" in aggregate["answer"]


def test_points_carry_what_they_did_before(anon, user):
    finding = _measured(user, 3, tags=("vision", "scale"))
    data = FindingEffects.objects.get(finding=finding).data
    finding.refresh_from_db()
    (point,) = anon.get("/api/v1/landscape/").json()["findings"]
    assert point == {
        "finding": finding.pk, "title": finding.title, "kind": "fix", "status": finding.status,
        "tags": ["scale", "vision"], "plugins": ["echo"],
        "safety": data["axis_scores"]["safety"], "capability": data["axis_scores"]["capability"],
        "lean": data["lean"], "evidence_rungs": data["evidence_rungs"], "n_runs": data["n_runs"],
    }


def test_page_errors_name_the_parameter(anon, user):
    _measured(user, 1)
    for params, field in (({"page": "0"}, "page"), ({"page": "x"}, "page"), ({"page_size": "-1"}, "page_size"),
                          ({"page_size": "1.5"}, "page_size"), ({"page": "²"}, "page")):
        response = anon.get("/api/v1/landscape/", params)
        assert response.status_code == 400, (params, response.content)
        assert field in response.content.decode()
    assert anon.get("/api/v1/landscape/", {"page": 2}).status_code == 404
    body = anon.get("/api/v1/landscape/", {"page_size": 100000}).json()
    assert body["page_info"]["page_size"] == selectors.MAX_LANDSCAPE_PAGE_SIZE


def test_hidden_findings_count_nowhere_for_those_who_may_not_see_them(anon, user, other_user, client_for):
    _measured(user, 1)
    _measured(user, 2, visibility=Finding.Visibility.RESTRICTED)
    assert anon.get("/api/v1/landscape/").json()["aggregate"]["n_findings"] == 1
    assert client_for(other_user).get("/api/v1/landscape/").json()["aggregate"]["n_findings"] == 1
    body = client_for(user).get("/api/v1/landscape/").json()
    assert body["aggregate"]["n_findings"] == 2 and len(body["findings"]) == 2


def test_capabilities_correlation_is_reused_until_a_run_is_stored_then_recomputed(anon, user):
    findings = [_measured(user, i) for i in range(3)]
    first = anon.get("/api/v1/landscape/").json()["capabilities_correlation"]
    (echo,) = first
    observations = {m["metric"]: m["observations"] for m in echo["metrics"]}
    assert observations and set(observations.values()) == {3 * 4 * 2}  # 3 findings x 4 runs x 2 arms
    assert anon.get("/api/v1/landscape/").json()["capabilities_correlation"] == first  # from the cache
    reproduction(experiment_for(findings[0]), {"risk": _pairs(1.0, 0.8, 0.01), "skill": _pairs(1.0, 1.2, 0.01)})
    (echo,) = anon.get("/api/v1/landscape/").json()["capabilities_correlation"]
    assert {m["observations"] for m in echo["metrics"]} == {4 * 4 * 2}
    assert echo["runs_left_out"] is False


def test_capabilities_correlation_uses_the_most_recent_runs_over_the_cap(anon, user, monkeypatch):
    monkeypatch.setattr(selectors, "MAX_CORRELATION_RUNS", 5)
    for i in range(3):
        _measured(user, i)
    (echo,) = anon.get("/api/v1/landscape/").json()["capabilities_correlation"]
    assert echo["runs_left_out"] is True and "5 most recent runs" in echo["warning"]
    assert {m["runs"] for m in echo["metrics"]} == {5}


# ---------------------------------------------------------------- constant query counts


def _queries(client, url: str) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, (url, response.content[:500])
    sql = [q["sql"] for q in ctx.captured_queries]
    assert not [s for s in sql if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))], sql  # a read
    return len(sql), sql


def _assert_constant(client, url: str, grow: Callable[[int], None]) -> None:
    """Both counts with the capabilities correlation cached (a warm-up request after each growth:
    new runs invalidate it; computing it costs a few more queries per plugin, whatever the size)."""
    grow(SMALL)
    _queries(client, url)  # warm-up: per-process caches
    n_small, _ = _queries(client, url)
    grow(LARGE - SMALL)
    n_cold, _ = _queries(client, url)
    n_large, sql = _queries(client, url)
    assert n_cold >= n_large  # cold: the plugin list and correlations computed (a few queries per plugin)
    assert n_small == n_large, f"{n_small} queries with {SMALL} theories, {n_large} with {LARGE}:\n" + "\n".join(sql)


def _theories(user) -> Callable[[int], None]:
    """Each step: a measured theory, a measured fix building on it and a restricted one too."""

    def grow(n: int) -> None:
        for _ in range(n):
            i = Finding.objects.count()
            theory = _measured(user, i, kind="theory", tags=("scale", f"t{i}"))
            _measured(user, i + 1, builds_on=[theory])
            FindingFactory(created_by=user, kind="fix", visibility=Finding.Visibility.RESTRICTED).builds_on.set(
                [theory]
            )

    return grow


@pytest.fixture(params=["author", "stranger", "anonymous"])
def who(request) -> str:
    return request.param


def test_landscape_api_costs_the_same_for_2_or_10_theories(who, user, other_user):
    client = APIClient()
    if who != "anonymous":
        client.force_authenticate(user if who == "author" else other_user)
    _assert_constant(client, "/api/v1/landscape/", _theories(user))


def test_landscape_api_with_a_tag_costs_the_same_for_2_or_10_theories(user):
    _assert_constant(APIClient(), "/api/v1/landscape/?tag=scale&kind=theory&plugin=echo", _theories(user))


def test_landscape_page_costs_the_same_for_2_or_10_theories(who, user, other_user):
    client = Client()
    if who != "anonymous":
        client.force_login(user if who == "author" else other_user)
    _assert_constant(client, "/landscape/", _theories(user))


def test_rollup_costs_the_same_for_2_or_10_descendants(user):
    theory = _measured(user, 0, kind="theory")

    def grow(n: int) -> None:
        for i in range(n):
            _measured(user, i + 1, builds_on=[theory])

    _assert_constant(APIClient(), f"/api/v1/findings/{theory.pk}/rollup/", grow)


def test_landscape_scores_are_finite_numbers(anon, user):
    for i in range(5):
        _measured(user, i)
    for point in anon.get("/api/v1/landscape/").json()["findings"]:
        assert math.isfinite(point["safety"]["score"]) and math.isfinite(point["capability"]["score"])


def test_the_landscape_page_says_when_it_shows_only_the_first_findings(client, user, monkeypatch):
    monkeypatch.setattr(selectors, "LANDSCAPE_PAGE_SIZE", 2)
    for i in range(3):
        _measured(user, i)
    html = client.get("/landscape/").content.decode()
    assert "The first 2 of 3 findings are shown here" in html
    assert html.count('<tr data-finding="') == 2
    monkeypatch.setattr(selectors, "LANDSCAPE_PAGE_SIZE", 200)
    assert "landscape-truncated" not in client.get("/landscape/").content.decode()
