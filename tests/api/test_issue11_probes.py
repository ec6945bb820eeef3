"""Hostile-input and visibility probes of the Issue 11 endpoints."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from registry.effects.models import FindingEffects
from registry.reproductions.models import Reproduction, Run
from tests.effects.builders import echo_params, experiment_for
from tests.factories import FindingFactory

pytestmark = pytest.mark.django_db

API = "/api/v1"


def _hidden(**kw):
    return FindingFactory(visibility="restricted", embargo_until=timezone.now() + timedelta(days=30), **kw)


@pytest.mark.parametrize("q", ["_", "a_b", "__init__", "²", "x²", "ǅ", "a" * 500, "٣", "ab\u0301", "ⅻ", "1_000"])
def test_search_never_500(anon, q):
    FindingFactory(title="Induction heads form abruptly", summary="x")
    response = anon.get(f"{API}/findings/", {"q": q})
    assert response.status_code in (200, 400), (q, response.status_code)


def test_search_does_not_find_hidden(anon, other_user, client_for):
    _hidden(title="Secret dualuse zebra")
    assert anon.get(f"{API}/findings/", {"q": "zebra"}).json()["count"] == 0
    assert client_for(other_user).get(f"{API}/findings/", {"q": "zebra"}).json()["count"] == 0


def test_effects_detail_of_hidden_is_404(anon, other_user, client_for):
    hidden = _hidden()
    FindingEffects.objects.create(finding=hidden, data={"finding": hidden.pk, "n_runs": 1}, detail=[[["run_ids"], [1]]])
    assert anon.get(f"{API}/findings/{hidden.pk}/effects/", {"detail": "runs"}).status_code == 404
    assert client_for(other_user).get(f"{API}/findings/{hidden.pk}/effects/?detail=runs").status_code == 404


def test_landscape_hides_hidden(anon):
    public = FindingFactory(title="public one")
    hidden = _hidden(title="hidden one")
    for f, lean in ((public, "dual"), (hidden, "capability-leaning")):
        FindingEffects.objects.create(
            finding=f, data={"lean": lean, "axis_scores": {"safety": {"score": 1.0}, "capability": {"score": 2.0}}}
        )
    body = anon.get(f"{API}/landscape/").json()
    assert [p["finding"] for p in body["findings"]] == [public.pk]
    assert body["aggregate"]["n_findings"] == 1 and body["aggregate"]["counts"]["capability-leaning"] == 0
    assert body["page_info"]["count"] == 1


@pytest.mark.parametrize("field,value", [("hardware", "cpu\x00x"), ("plugin_version", "1\x00"),
                                         ("hardware", "  "), ("environment", {"a\x00": 1})])
def test_batch_bad_values_are_400_and_nothing_stored(user, client_for, field, value):
    finding = FindingFactory(created_by=user, kind="fix")
    experiment = experiment_for(finding)
    run = {"seed": 1, "measurements": {"baseline": {"risk": 1.0, "skill": 1.0, "width": 3.0},
                                       "intervention": {"risk": 0.5, "skill": 1.0, "width": 3.0}}}
    body = {"params": echo_params(), "hardware": "cpu", "runs": [run, {**run, "seed": 2, field: value}]}
    response = client_for(user).post(f"{API}/experiments/{experiment.pk}/self-reported-runs/batch/", body,
                                     format="json")
    assert response.status_code == 400, response.content
    assert not Run.objects.exists() and not Reproduction.objects.exists()


@pytest.mark.parametrize("page", ["0", "-1", "abc", "99999999999999", "1.5", "2"])
def test_landscape_page_input(anon, page):
    FindingFactory()
    assert anon.get(f"{API}/landscape/", {"page": page}).status_code in (400, 404)


@pytest.mark.parametrize("page", ["0", "-1", "abc", "99999999999999", "1e3", "2"])
def test_findings_page_input(anon, page):
    FindingFactory()
    assert anon.get(f"{API}/findings/", {"page": page}).status_code in (400, 404)
