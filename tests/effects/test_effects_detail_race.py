"""?detail=runs serves the summary and the detail of one computation, even if a recompute stores
another between the two reads."""

from __future__ import annotations

import pytest

from registry.effects import selectors
from registry.effects.models import FindingEffects
from tests.factories import FindingFactory

pytestmark = pytest.mark.django_db

# Two computations of the same effects; the metrics come in another order in the second.
A = ({"finding": 0, "metrics": [{"metric": "risk"}, {"metric": "skill"}]},
     [[["metrics", 0, "run_ids"], [1]], [["metrics", 1, "run_ids"], [2]]])
B = ({"finding": 0, "metrics": [{"metric": "skill"}, {"metric": "risk"}]},
     [[["metrics", 0, "run_ids"], [2]], [["metrics", 1, "run_ids"], [1]]])


def test_summary_and_detail_come_from_one_computation(anon, monkeypatch):
    finding = FindingFactory()
    FindingEffects.objects.create(finding=finding, data=A[0], detail=A[1])
    real = selectors.finding_effects_get

    def then_a_recompute_stores(**kwargs):
        served = real(**kwargs)
        FindingEffects.objects.filter(finding=finding).update(data=B[0], detail=B[1])
        return served

    monkeypatch.setattr(selectors, "finding_effects_get", then_a_recompute_stores)
    body = anon.get(f"/api/v1/findings/{finding.pk}/effects/", {"detail": "runs"}).json()
    assert {m["metric"]: m["run_ids"] for m in body["metrics"]} == {"risk": [1], "skill": [2]}
