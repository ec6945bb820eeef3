"""The landscape's aggregates are reused from the cache while nothing they read changed, and
follow at once what does change: a recompute's stored effects, the filters' selection, what the
reader may see. The dashboard's landscape page is reused while its data is the same."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from registry.dashboard import landscape as dashboard_landscape
from registry.effects.models import FindingEffects
from registry.findings.models import Finding, Tag
from tests.effects.builders import experiment_for, recompute_as_the_worker, reproduction
from tests.factories import FindingFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def _measured(user, i: int) -> Finding:
    finding = FindingFactory(created_by=user, kind="fix", title=f"Measured {i}")
    ratio = 0.9 - 0.07 * (i % 9)
    values = {
        "risk": [(1.0, ratio * (1 + 0.02 * k)) for k in range(4)],
        "skill": [(1.0, (1.0 + 0.05 * ((i * 7) % 11)) * (1 + 0.015 * k)) for k in range(4)],
    }
    reproduction(experiment_for(finding), values)
    recompute_as_the_worker(finding.pk)
    return finding


def _store_lean(finding: Finding, lean: str, stamped_at=None) -> None:
    """What a recompute's store does to the row (``registry.effects.services``): new data, stamped."""
    row = FindingEffects.objects.get(finding=finding)
    FindingEffects.objects.filter(pk=row.pk).update(
        data={**row.data, "lean": lean}, computed_at=stamped_at or timezone.now()
    )


def _counts() -> dict[str, int]:
    counts = {lean: 0 for lean in ("safety-leaning", "capability-leaning", "dual", "neither")}
    for lean in FindingEffects.objects.values_list("lean", flat=True):
        counts[lean] += 1
    return counts


@pytest.fixture
def measured(user) -> list[Finding]:
    cache.clear()
    return [_measured(user, i) for i in range(6)]


def test_stored_effects_changing_move_the_cached_aggregates(anon, measured):
    before = anon.get("/api/v1/landscape/").json()["aggregate"]
    assert anon.get("/api/v1/landscape/").json()["aggregate"] == before  # reused
    target = "dual" if measured[0].effects_cache.lean != "dual" else "neither"
    _store_lean(measured[0], target)
    after = anon.get("/api/v1/landscape/").json()["aggregate"]
    assert after["counts"] == _counts() and after["counts"] != before["counts"]


def test_a_recompute_stamped_earlier_but_committed_later_still_moves_them(anon, measured):
    first_stamp = timezone.now()
    _store_lean(measured[1], "dual", stamped_at=first_stamp + timedelta(seconds=1))  # committed first
    assert anon.get("/api/v1/landscape/").json()["aggregate"]["counts"] == _counts()
    _store_lean(measured[2], "dual" if measured[2].effects_cache.lean != "dual" else "neither", stamped_at=first_stamp)
    assert anon.get("/api/v1/landscape/").json()["aggregate"]["counts"] == _counts()


def test_a_filter_selection_changing_moves_the_cached_aggregates(anon, measured):
    tag = Tag.objects.create(name="cached-tag")
    measured[0].tags.add(tag)
    url = "/api/v1/landscape/?tag=cached-tag"
    assert anon.get(url).json()["aggregate"]["n_findings"] == 1
    for finding in measured[1:3]:  # tags added: no finding saved, no effects stored
        finding.tags.add(tag)
    body = anon.get(url).json()
    assert body["aggregate"]["n_findings"] == 3
    assert sorted(p["finding"] for p in body["findings"]) == sorted(f.pk for f in measured[:3])


def test_a_page_takes_its_residuals_from_the_aggregates_of_every_finding(anon, measured):
    whole = anon.get("/api/v1/landscape/").json()["aggregate"]["differential_progress"]["findings"]
    entries = []
    for page in (1, 2, 3):
        progress = anon.get(f"/api/v1/landscape/?page_size=2&page={page}").json()["aggregate"]
        entries += progress["differential_progress"]["findings"]
    assert entries == whole and [e["index"] for e in whole] == list(range(len(measured)))


def test_the_page_is_built_once_while_its_data_is_the_same(user, measured, monkeypatch):
    built = []
    build = dashboard_landscape._build
    monkeypatch.setattr(dashboard_landscape, "_build", lambda *a, **k: built.append(1) or build(*a, **k))
    client = Client()
    first = client.get("/landscape/")
    second = client.get("/landscape/")
    assert first.status_code == second.status_code == 200
    assert len(built) == 1
    assert first.content.count(b'<tr data-finding=') == second.content.count(b'<tr data-finding=') > 0
    target = "dual" if measured[0].effects_cache.lean != "dual" else "neither"
    _store_lean(measured[0], target)
    third = client.get("/landscape/").content.decode()
    assert len(built) == 2
    for lean, n in _counts().items():
        assert f'lean-count--{lean}"><span class="lean-count__n">{n}</span>' in third


def test_a_restricted_findings_tags_are_offered_only_to_who_may_see_it(user, other_user):
    hidden = FindingFactory(created_by=user, visibility="restricted")
    hidden.tags.add(Tag.objects.create(name="hidden-tag"))
    FindingFactory(created_by=user).tags.add(Tag.objects.create(name="open-tag"))
    Tag.objects.create(name="unused-tag")
    author, stranger = Client(), Client()
    author.force_login(user)
    stranger.force_login(other_user)
    for path in ("/", "/landscape/"):
        seen = author.get(path).content.decode()
        assert 'value="hidden-tag"' in seen and 'value="open-tag"' in seen and 'value="unused-tag"' not in seen
        for client in (stranger, Client()):
            page = client.get(path).content.decode()
            assert 'value="open-tag"' in page and 'value="hidden-tag"' not in page


def test_a_recompute_is_stamped_by_the_database_clock_not_its_host(measured, monkeypatch):
    """A maintenance host whose clock lags would stamp its recompute in the past, under the newest
    stamps whose sum versions the cached aggregates: they would stay stale. The stamp is the
    database's clock."""
    from django.db import connection

    from registry.effects import services

    lagging = timezone.now() - timedelta(hours=1)
    monkeypatch.setattr(services.timezone, "now", lambda: lagging)
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        (before,) = cursor.fetchone()
    recompute_as_the_worker(measured[0].pk)
    stamped = FindingEffects.objects.get(finding=measured[0]).computed_at
    assert stamped >= before, (stamped, before)
