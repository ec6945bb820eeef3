"""The example findings (one per built-in plus the checkerboard theory), created as the embedded
default creates them, reproduced on the plugins' tiny presets through a real worker: every claim
is decided on real measurements by the recompute task, and every verdict path ends in a status the API serves."""

import pytest

from registry.effects.models import FindingEffects
from registry.findings.examples import example_specs, examples_load
from registry.findings.models import Finding
from registry.reproductions.models import Run
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis, pytest.mark.worker]

STATUSES = {"reproduced", "partially_reproduced", "undecided", "failed_to_reproduce", "contested"}


def _all_finished() -> bool:
    return not Run.objects.filter(state__in=["queued", "running"]).exists()


def _all_computed() -> bool:
    rows = FindingEffects.objects.all()
    return rows.count() == Finding.objects.count() and not rows.filter(pending=True).exists() and all(
        row.data.get("n_runs", 0) > 0 for row in rows
    )


def test_example_findings_on_tiny_presets_reach_verdicts(celery_worker, anon):
    findings = examples_load(preset="tiny")
    assert len(findings) == len(example_specs()) >= 8
    wait_for(_all_finished, timeout=900)
    assert set(Run.objects.values_list("state", flat=True)) == {"succeeded"}, celery_worker.output()[-3000:]
    wait_for(_all_computed, timeout=180)
    for finding in findings:
        response = anon.get(f"/api/v1/findings/{finding.pk}/effects/")
        assert response.status_code == 200
        effects = response.json()
        assert effects["pending"] is False and effects["error"] in (None, "")
        assert effects["status"] in STATUSES, (finding.title, effects["status"])
        assert effects["claims"], finding.title
        for claim in effects["claims"]:
            assert claim["has_data"], (finding.title, claim["metric"])
            assert claim["verdict"] in {"confirmed", "refuted", "inconclusive"}
            seeds = {experiment.default_seeds for experiment in finding.experiments.all()}
            assert claim["experiments"] and all(e["n_seeds"] in seeds for e in claim["experiments"])
            if claim["effect"]["scale"] == "ratio" and claim["effect"]["relative_ci_low"] is not None:
                assert claim["effect"]["relative_ci_low"] > -1.0
        for axis in ("safety", "capability"):
            score = effects["axis_scores"][axis]
            assert score is not None and score["unit"] == "log", (finding.title, axis)
        assert anon.get(f"/api/v1/findings/{finding.pk}/").json()["status"] == effects["status"]
