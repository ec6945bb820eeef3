"""The checkerboard finding, reproduced end to end through a real worker, is confirmed.

Odena, Dumoulin & Olah (Distill 2016): resize-convolution removes the checkerboard artifacts of
transposed convolutions. Claim: checkerboard energy at least 50% lower. Three seeds of the
plugin's "tiny" preset run through Celery on Redis and PostgreSQL; the effects are recomputed in
the worker's transaction and read back over the API.
"""

import pytest

from registry.reproductions.models import Run
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis, pytest.mark.worker]


def _finished(reproduction_id: int) -> bool:
    return not Run.objects.filter(reproduction_id=reproduction_id, state__in=["queued", "running"]).exists()


def test_checkerboard_claim_is_confirmed_through_the_worker(celery_worker, api):
    from plugins.checkerboard import CheckerboardExperiment

    finding = api.post(
        "/api/v1/findings/",
        {"title": "Resize-convolution removes checkerboard artifacts", "kind": "fix"},
        format="json",
    ).json()
    response = api.post(
        f"/api/v1/findings/{finding['id']}/claims/",
        {"metric": "checkerboard_energy", "direction": "decrease", "min_relative_effect": 0.5},
        format="json",
    )
    assert response.status_code == 201, response.json()
    claim_id = response.json()["id"]
    response = api.post(
        f"/api/v1/findings/{finding['id']}/experiments/",
        {"plugin": "checkerboard", "params": CheckerboardExperiment.presets["tiny"], "default_seeds": 3},
        format="json",
    )
    assert response.status_code == 201, response.json()
    reproduction_id = response.json()["reproductions"][0]

    wait_for(lambda: _finished(reproduction_id), timeout=240)
    states = sorted(Run.objects.filter(reproduction_id=reproduction_id).values_list("state", flat=True))
    assert states == ["succeeded"] * 3, celery_worker.output()[-3000:]

    effects = api.get(f"/api/v1/findings/{finding['id']}/effects/").json()
    (claim,) = effects["claims"]
    assert claim["claim"] == claim_id
    assert claim["verdict"] == "confirmed", claim
    assert claim["evidence"] == "registry" and len(claim["run_ids"]) == 3
    assert claim["effect"]["relative_change"] < -0.5
    assert api.get(f"/api/v1/findings/{finding['id']}/").json()["status"] == "reproduced"
