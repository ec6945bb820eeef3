"""Reads never write: every read endpoint and dashboard page, for an anonymous reader and for a
signed-in stranger, issues no INSERT/UPDATE/DELETE (nor a row lock) and changes no row count,
even while a finding has runs, claims and a recompute pending, or has never been computed (the
cases in which effects used to be computed, locked and stored on GET)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from django.apps import apps
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from registry.accounts.services import token_create
from registry.effects.models import ClaimVerdict, FindingEffects
from registry.findings.models import Finding
from registry.findings.services import claim_create
from registry.reproductions.models import Reproduction, Run
from registry.reproductions.services import artifact_path
from tests.dashboard import builders as b
from tests.effects.builders import RISK_DOWN, SKILL_UP, experiment_for, reproduction

pytestmark = pytest.mark.django_db

WRITE = re.compile(
    r"^\s*(INSERT|UPDATE|DELETE|MERGE|TRUNCATE|REPLACE)\b|\bFOR\s+(NO\s+KEY\s+)?UPDATE\b|\bFOR\s+(KEY\s+)?SHARE\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Read:
    path: str
    anonymous: int | tuple[int, ...]
    stranger: int | tuple[int, ...]
    page: bool = False  # a dashboard page (session only; a token does not sign in there)
    stream: bool = False


@pytest.fixture
def world(user):
    """A theory; a fix built on it with an echo experiment, claims, five succeeded runs and an
    artifact, effects computed once and then a new claim (recompute pending); a finding with runs
    and a claim whose effects were never computed; a restricted finding with runs."""
    theory = b.finding(user, title="Overlap paints checkerboards", kind=Finding.Kind.THEORY, tags=["vision"])
    fix = b.finding(user, title="Resize-convolution", tags=["vision"], builds_on=[theory])
    experiment = b.echo_experiment(fix, user)
    b.claim(fix, user, "risk", "decrease", min_relative_effect=0.3)
    measured = b.measured(experiment)  # runs the recompute: verdicts and cache stored
    run = measured.runs.order_by("id").first()
    artifact = b.artifact(run, name="values.json", content_type="application/json")
    path = artifact_path(artifact)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"ok": true}')
    claim = claim_create(finding=fix, user=user, metric="skill", direction="non_inferior", margin=0.05)
    assert FindingEffects.objects.get(finding=fix).pending  # requested, not yet recomputed

    never = b.finding(user, title="Never computed", builds_on=[theory])
    reproduction(experiment_for(never), {"risk": RISK_DOWN, "skill": SKILL_UP})
    b.claim(never, user, "risk", "decrease", min_relative_effect=0.3)
    FindingEffects.objects.filter(finding=never).delete()  # as before any recompute ran

    hidden = b.finding(user, title="Restricted", visibility=Finding.Visibility.RESTRICTED, builds_on=[theory])
    reproduction(experiment_for(hidden), {"risk": RISK_DOWN, "skill": SKILL_UP})
    return {
        "theory": theory,
        "fix": fix,
        "experiment": experiment,
        "reproduction": measured,
        "run": run,
        "artifact": artifact,
        "claim": claim,
        "never": never,
        "hidden": hidden,
        "hidden_run": Run.objects.filter(reproduction__experiment__finding=hidden).first(),
    }


def reads(w: dict) -> list[Read]:
    fix, theory, never, hidden = w["fix"].pk, w["theory"].pk, w["never"].pk, w["hidden"].pk
    experiment, repro, run = w["experiment"].pk, w["reproduction"].pk, w["run"].pk
    api = "/api/v1"
    unauthenticated = (401, 403)
    rows = [
        Read(f"{api}/findings/", 200, 200),
        Read(f"{api}/findings/?status=reproduced&tag=vision&plugin=echo&axis=safety&q=resize", 200, 200),
        Read(f"{api}/findings/{fix}/", 200, 200),
        Read(f"{api}/findings/{hidden}/", 404, 404),
        Read(f"{api}/findings/{fix}/claims/", 200, 200),
        Read(f"{api}/findings/{fix}/claims/?history=1", 200, 200),
        Read(f"{api}/claims/{w['claim'].pk}/", 200, 200),
        Read(f"{api}/findings/{fix}/experiments/", 200, 200),
        Read(f"{api}/experiments/", 200, 200),
        Read(f"{api}/experiments/{experiment}/", 200, 200),
        Read(f"{api}/experiments/{experiment}/reproductions/", 200, 200),
        Read(f"{api}/reproductions/", 200, 200),
        Read(f"{api}/reproductions/{repro}/", 200, 200),
        Read(f"{api}/runs/", 200, 200),
        Read(f"{api}/runs/{run}/", 200, 200),
        Read(f"{api}/runs/{w['hidden_run'].pk}/", 404, 404),
        Read(f"{api}/artifacts/{w['artifact'].pk}/download/", 200, 200),
        Read(f"{api}/findings/{fix}/effects/", 200, 200),
        Read(f"{api}/findings/{never}/effects/", 200, 200),
        Read(f"{api}/findings/{hidden}/effects/", 404, 404),
        Read(f"{api}/findings/{fix}/lineage/", 200, 200),
        Read(f"{api}/findings/{theory}/rollup/", 200, 200),
        Read(f"{api}/findings/{fix}/rollup/", 200, 200),
        Read(f"{api}/landscape/", 200, 200),
        Read(f"{api}/landscape/?tag=vision&kind=fix&plugin=echo", 200, 200),
        Read(f"{api}/metrics/", 200, 200),
        Read(f"{api}/metrics/?plugin=echo&axis=safety", 200, 200),
        Read(f"{api}/plugins/", 200, 200),
        Read(f"{api}/plugins/echo/", 200, 200),
        Read(f"{api}/events/", 200, 200),
        Read(f"{api}/events/?finding={fix}&type=claim.created,run.finished", 200, 200),
        Read(f"{api}/events/feed.atom", 200, 200),
        Read(f"{api}/events/feed.atom?tag=vision", 200, 200),
        Read(f"{api}/events/stream?timeout=1", 200, 200, stream=True),
        Read(f"{api}/subscriptions/", unauthenticated, 200),
        Read("/api/schema/", 200, 200),
        Read("/healthz", 200, 200),
        Read("/", 200, 200, page=True),
        Read("/?q=resize&kind=fix&status=reproduced&tag=vision&plugin=echo", 200, 200, page=True),
        Read(f"/findings/{fix}/", 200, 200, page=True),
        Read(f"/findings/{theory}/", 200, 200, page=True),
        Read(f"/findings/{never}/", 200, 200, page=True),
        Read(f"/findings/{hidden}/", 404, 404, page=True),
        Read(f"/findings/{fix}/runs/", 200, 200, page=True),
        Read(f"/runs/{run}/", 200, 200, page=True),
        Read("/landscape/", 200, 200, page=True),
        Read("/landscape/?tag=vision&kind=fix&plugin=echo", 200, 200, page=True),
        Read("/plugins/", 200, 200, page=True),
    ]
    return rows


def row_counts() -> dict[str, int]:
    return {model._meta.label: model.objects.count() for model in apps.get_models()}


def clients(kind: str, other_user) -> tuple[object, bool]:
    """The client, and whether it is signed in."""
    if kind == "anonymous":
        return Client(), False
    if kind == "stranger-session":
        client = Client()
        client.force_login(other_user)
        return client, True
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user=other_user, name='reader')[1]}")
    return client, True


def _expected(status: int | tuple[int, ...]) -> tuple[int, ...]:
    return status if isinstance(status, tuple) else (status,)


@pytest.mark.parametrize("kind", ["anonymous", "stranger-session", "stranger-token"])
def test_no_read_writes(world, other_user, kind):
    client, signed_in = clients(kind, other_user)
    fix = world["fix"]
    effects_before = FindingEffects.objects.get(finding=fix)
    verdicts_before = list(ClaimVerdict.objects.order_by("id").values_list("id", "verdict", "updated_at"))
    problems = []
    for read in reads(world):
        if read.page and kind == "stranger-token":
            continue
        before = row_counts()
        with CaptureQueriesContext(connection) as queries:
            response = client.get(read.path)
            if read.stream:
                b"".join(response.streaming_content)
        expected = _expected(read.stranger if signed_in else read.anonymous)
        if response.status_code not in expected:
            problems.append(f"{read.path}: status {response.status_code}, expected {expected}")
        # the token's last_used_at (written at most once a minute) is bookkeeping, not a read writing data
        writes = [
            q["sql"]
            for q in queries.captured_queries
            if WRITE.search(q["sql"]) and "accounts_apitoken" not in q["sql"]
        ]
        if writes:
            problems.append(f"{read.path}: {len(writes)} write(s), first: {writes[0][:300]}")
        after = row_counts()
        changed = {label: (before[label], after[label]) for label in before if before[label] != after[label]}
        if changed:
            problems.append(f"{read.path}: row counts changed {changed}")
    assert not problems, "\n".join(problems)
    # and nothing was recomputed behind the reader's back
    effects_after = FindingEffects.objects.get(finding=fix)
    assert (effects_after.pending, effects_after.data, effects_after.computed_at) == (
        True,
        effects_before.data,
        effects_before.computed_at,
    )
    assert not FindingEffects.objects.filter(finding=world["never"]).exists()
    assert list(ClaimVerdict.objects.order_by("id").values_list("id", "verdict", "updated_at")) == verdicts_before
    assert Finding.objects.get(pk=world["never"].pk).status == "unreproduced"


def test_pending_effects_read_as_cached_with_pending_flag(world, anon):
    fix = world["fix"]
    cached = FindingEffects.objects.get(finding=fix)
    body = anon.get(f"/api/v1/findings/{fix.pk}/effects/").json()
    assert body["pending"] is True and body["error"] is None
    assert body["computed_at"] == cached.computed_at.isoformat()
    assert [c["claim"] for c in body["claims"]] == [c["claim"] for c in cached.data["claims"]]
    assert world["claim"].pk not in [c["claim"] for c in body["claims"]]  # not computed yet


def test_never_computed_effects_read_as_a_minimal_structure(world, anon):
    never = world["never"]
    body = anon.get(f"/api/v1/findings/{never.pk}/effects/").json()
    assert body.pop("detail_url").endswith(f"/api/v1/findings/{never.pk}/effects/?detail=runs")
    assert body == {
        "finding": never.pk,
        "status": "unreproduced",
        "n_runs": 0,
        "run_ids": [],
        "evidence_rungs": [],
        "experiments": [],
        "metrics": [],
        "claims": [],
        "axis_scores": {"safety": None, "capability": None},
        "lean": "neither",
        "pending": False,  # no row at all: no recompute was requested
        "computed_at": None,
        "error": None,
    }
    assert Reproduction.objects.filter(experiment__finding=never).exists()


def test_dashboard_says_when_effects_are_being_recomputed(world, client):
    page = client.get(f"/findings/{world['fix'].pk}/")
    assert page.status_code == 200
    assert b"being recomputed" in page.content
