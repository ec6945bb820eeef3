"""Plugin upgrades: findings whose results come from an older plugin version become stale."""

import pytest
from django.test import override_settings

from registry.events.models import Event
from registry.reproductions import services
from registry.reproductions.models import Reproduction, Run
from registry.reproductions.versions import finding_refresh_stale, findings_mark_stale
from tests.factories import FindingFactory

pytestmark = pytest.mark.django_db


def _finding_with_run(user, plugin_version: str):
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(finding=finding, user=user, plugin="echo", reproduce=False)
    reproduction = Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=[0])
    Run.objects.create(reproduction=reproduction, seed=0, state="succeeded", plugin_version=plugin_version)
    return finding


def test_old_results_make_a_finding_stale_and_fresh_ones_clear_it(user, api):
    finding = _finding_with_run(user, plugin_version="0.9.0")
    current = _finding_with_run(user, plugin_version="1.0.0")
    assert findings_mark_stale() == [finding.pk]
    finding.refresh_from_db()
    assert finding.effects_stale
    assert Event.objects.filter(type="finding.stale", finding_id=finding.pk).count() == 1
    assert findings_mark_stale() == []  # idempotent: no second event
    current.refresh_from_db()
    assert not current.effects_stale

    response = api.post(f"/api/v1/findings/{finding.pk}/rereproduce/")
    assert response.status_code == 202, response.json()
    assert len(response.json()) == 1 and response.json()[0]["seeds"] == [0]  # the stale reproduction's seeds

    reproduction = Reproduction.objects.filter(experiment__finding=finding).first()
    Run.objects.create(reproduction=reproduction, seed=1, state="succeeded", plugin_version="1.0.0")
    finding_refresh_stale(finding_id=finding.pk)
    finding.refresh_from_db()
    assert not finding.effects_stale


def test_rereproduce_needs_an_author(user, other_user, client_for):
    finding = _finding_with_run(user, plugin_version="0.9.0")
    response = client_for(other_user).post(f"/api/v1/findings/{finding.pk}/rereproduce/")
    assert response.status_code == 403
    assert Reproduction.objects.filter(experiment__finding=finding).count() == 1


@override_settings(REREPRODUCE_ON_PLUGIN_UPGRADE=True)
def test_automatic_rereproduction_when_the_setting_says_so(user):
    finding = _finding_with_run(user, plugin_version="0.9.0")
    findings_mark_stale()
    assert Reproduction.objects.filter(experiment__finding=finding).count() == 2
