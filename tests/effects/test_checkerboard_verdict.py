"""The README's curl walk-through, followed as written, through a real worker.

Odena, Dumoulin & Olah (Distill 2016): resize-convolution removes the checkerboard artifacts of
transposed convolutions. The README posts the finding, the claims "checkerboard energy decreases by
at least 90%" and "pooled MSE is not worse by more than 5%", and a checkerboard experiment with
``{"steps": 300}`` and 3 seeds; the runs go through Celery on Redis and PostgreSQL, the recompute
task computes the effects, and the API serves them.
"""

import pytest

from registry.reproductions.models import Run
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis, pytest.mark.worker]


def _finished(reproduction_id: int) -> bool:
    return not Run.objects.filter(reproduction_id=reproduction_id, state__in=["queued", "running"]).exists()


def test_readme_walkthrough_ends_confirmed(celery_worker, api):
    finding = api.post(
        "/api/v1/findings/",
        {
            "title": "Resize-convolution removes checkerboard artifacts",
            "kind": "fix",
            "tags": ["checkerboard", "vision"],
            "summary": "Nearest-neighbour resize then convolution instead of a transposed convolution.",
            "references": ["https://distill.pub/2016/deconv-checkerboard/"],
        },
        format="json",
    ).json()
    claims = [
        {"metric": "checkerboard_energy", "direction": "decrease", "min_relative_effect": 0.9},
        {"metric": "pooled_mse", "direction": "non_inferior", "margin": 0.05},
    ]
    claim_ids = []
    for body in claims:
        response = api.post(f"/api/v1/findings/{finding['id']}/claims/", body, format="json")
        assert response.status_code == 201, response.json()
        claim_ids.append(response.json()["id"])
    response = api.post(
        f"/api/v1/findings/{finding['id']}/experiments/",
        {"plugin": "checkerboard", "params": {"steps": 300}, "default_seeds": 3},
        format="json",
    )
    assert response.status_code == 201, response.json()
    reproduction_id = response.json()["reproductions"][0]

    wait_for(lambda: _finished(reproduction_id), timeout=400)
    states = sorted(Run.objects.filter(reproduction_id=reproduction_id).values_list("state", flat=True))
    assert states == ["succeeded"] * 3, celery_worker.output()[-3000:]

    def computed() -> dict | None:
        data = api.get(f"/api/v1/findings/{finding['id']}/effects/").json()
        return None if data["pending"] or data["n_runs"] < 3 else data

    wait_for(lambda: computed() is not None, timeout=120)
    effects = computed()
    energy, mse = (next(c for c in effects["claims"] if c["claim"] == pk) for pk in claim_ids)
    assert energy["verdict"] == "confirmed", energy
    assert energy["evidence"] == "registry" and energy["n_runs"] == 3  # run ids: ?detail=runs
    effect = energy["effect"]
    # A ratio metric on the log scale: the whole interval lies beyond -90% and above -100%.
    assert -1.0 < effect["relative_ci_low"] <= effect["relative_change"] <= effect["relative_ci_high"] < -0.9
    assert mse["verdict"] == "confirmed", mse
    assert api.get(f"/api/v1/findings/{finding['id']}/").json()["status"] == "reproduced"
    safety = effects["axis_scores"]["safety"]
    assert safety["unit"] == "log" and safety["score"] > 2.3  # energy at least 10x lower
