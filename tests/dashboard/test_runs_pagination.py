"""The finding page's runs section (and the fragment it polls) shows one page of runs at a time."""

from __future__ import annotations

import re

import pytest

from registry.dashboard.selectors import RUNS_PAGE_SIZE
from registry.reproductions import services
from registry.reproductions.models import Reproduction, Run
from tests.factories import FindingFactory

pytestmark = pytest.mark.django_db

N_RUNS = 2 * RUNS_PAGE_SIZE + 20


@pytest.fixture
def crowded(user):
    """A finding with N_RUNS queued runs over several reproductions, written directly."""
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(finding=finding, user=user, plugin="echo", reproduce=False)
    seed = 0
    while seed < N_RUNS:
        seeds = list(range(seed, min(seed + 40, N_RUNS)))
        reproduction = Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=seeds)
        Run.objects.bulk_create([Run(reproduction=reproduction, seed=s) for s in seeds])
        seed += 40
    return finding


def _run_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'data-run-id="(\d+)"', html)]


def test_the_finding_page_shows_one_page_of_runs(crowded, readers):
    for reader in readers.values():
        html = reader.get(f"/findings/{crowded.pk}/").content.decode()
        ids = _run_ids(html)
        assert len(ids) == RUNS_PAGE_SIZE
        assert f"of {N_RUNS}" in html
        assert 'href="?runs_page=2#runs"' in html and "More runs" in html
        assert "Previous runs" not in html
        # the newest reproduction's runs come first
        newest = Reproduction.objects.order_by("-pk").first()
        assert ids[0] == newest.runs.order_by("pk").first().pk


def test_every_run_is_on_exactly_one_page(crowded, client):
    seen: list[int] = []
    for page in (1, 2, 3):
        response = client.get(f"/findings/{crowded.pk}/runs/?runs_page={page}")
        assert response.status_code == 200
        seen += _run_ids(response.content.decode())
    assert sorted(seen) == sorted(Run.objects.values_list("pk", flat=True))
    assert len(seen) == N_RUNS
    last = client.get(f"/findings/{crowded.pk}/runs/?runs_page=3").content.decode()
    assert len(_run_ids(last)) == N_RUNS - 2 * RUNS_PAGE_SIZE
    assert "Previous runs" in last and "More runs" not in last


def test_the_polled_fragment_stays_on_its_page_and_is_bounded(crowded, client, django_assert_max_num_queries):
    with django_assert_max_num_queries(40):
        html = client.get(f"/findings/{crowded.pk}/runs/?runs_page=2").content.decode()
    assert len(_run_ids(html)) == RUNS_PAGE_SIZE
    # runs are queued: the section polls, and polls the page it shows
    assert 'data-polling="on"' in html
    assert f'hx-get="/findings/{crowded.pk}/runs/?runs_page=2"' in html


def test_out_of_range_or_malformed_page_numbers_are_not_errors(crowded, client):
    for page in ("abc", "0", "999", "-1"):
        response = client.get(f"/findings/{crowded.pk}/runs/?runs_page={page}")
        assert response.status_code == 200 and _run_ids(response.content.decode())


def test_few_runs_have_no_pager(user, client):
    finding = FindingFactory(created_by=user)
    services.experiment_create(finding=finding, user=user, plugin="echo", default_seeds=3)
    html = client.get(f"/findings/{finding.pk}/").content.decode()
    assert len(_run_ids(html)) == 3
    assert "runs-pagination" not in html and "runs_page" not in html
