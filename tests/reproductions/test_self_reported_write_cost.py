"""The cost of a self-reported write (issue 11, "writes in O(1)"): a fixed number of SQL queries
whatever the finding, the experiment and the user already hold, and whatever a batch carries;
the answer built from the rows just written (no read-back) equals the run as read afterwards; the
one-query look-up of an author still tells a hidden experiment (404) from a visible one the caller
may not report on (403)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from registry.effects import services as effects_services
from registry.findings.models import Finding, FindingAuthor
from tests.effects.builders import echo_params, experiment_for
from tests.factories import FindingFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

MEASUREMENTS = {
    "baseline": {"risk": 1.0, "skill": 1.0, "width": 3.0},
    "intervention": {"risk": 0.5, "skill": 1.0, "width": 3.0},
}


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch) -> None:
    monkeypatch.setattr(effects_services, "effects_recompute_enqueue", lambda finding_id, **options: None)


def _single(experiment_id: int, seed: int) -> tuple[str, dict]:
    return (f"/api/v1/experiments/{experiment_id}/self-reported-runs/",
            {"seed": seed, "measurements": MEASUREMENTS, "params": echo_params(), "hardware": "cpu",
             "environment": {"torch": "2.4.0"}})


def _batch(experiment_id: int, seeds: range) -> tuple[str, dict]:
    return (f"/api/v1/experiments/{experiment_id}/self-reported-runs/batch/",
            {"params": echo_params(), "hardware": "cpu", "runs": [{"seed": s, "measurements": MEASUREMENTS}
                                                                  for s in seeds]})


def _queries(api, request: tuple[str, dict]) -> tuple[int, list[str]]:
    url, body = request
    with CaptureQueriesContext(connection) as ctx:
        response = api.post(url, body, format="json")
    assert response.status_code == 201, response.content[:500]
    return len(ctx.captured_queries), [q["sql"] for q in ctx.captured_queries]


def test_a_write_costs_the_same_queries_whatever_is_stored_already(api, user, mid_hour_clock) -> None:
    finding = FindingFactory(created_by=user, kind="fix")
    experiment = experiment_for(finding)
    _queries(api, _single(experiment.pk, 0))  # warm-up: the quota row, the effects row, the catalogue
    first, first_sql = _queries(api, _single(experiment.pk, 1))
    first_batch, _ = _queries(api, _batch(experiment.pk, range(2, 3)))

    # more of everything a write could read: runs (and their measurements) of this experiment, of
    # another experiment of the finding, of the same user on another finding
    _queries(api, _batch(experiment.pk, range(100, 130)))
    _queries(api, _batch(experiment_for(finding).pk, range(30)))
    _queries(api, _batch(experiment_for(FindingFactory(created_by=user, kind="fix")).pk, range(30)))

    later, later_sql = _queries(api, _single(experiment.pk, 1000))
    later_batch, _ = _queries(api, _batch(experiment.pk, range(2000, 2040)))  # 40 runs, 240 measurements
    assert later == first, (first_sql, later_sql)
    assert later_batch == first_batch
    # the budget of one write (the test client authenticates without a token query): the
    # experiment with the author check, the catalogue check, 4 inserts, the recompute request,
    # the quota lock, its counts (one statement) and the hourly record, and the transaction's
    # savepoint and release
    assert first <= 12, first_sql


def test_the_answer_is_the_run_as_read_back(api, user) -> None:
    experiment = experiment_for(FindingFactory(created_by=user, kind="fix"))
    url, body = _single(experiment.pk, 7)
    created = api.post(url, body, format="json")
    assert created.status_code == 201, created.content[:500]
    read = api.get(f"/api/v1/runs/{created.json()['id']}/")
    assert read.status_code == 200
    assert created.json() == read.json()
    assert [(m["arm"], m["metric"], m["value"]) for m in created.json()["measurements"]] == [
        (arm, metric, value) for arm, values in MEASUREMENTS.items() for metric, value in values.items()
    ]


def test_who_may_report_is_unchanged_by_the_one_query_look_up(client_for, user) -> None:
    stranger, invited = UserFactory(), UserFactory()
    public = experiment_for(FindingFactory(created_by=user, kind="fix"))
    hidden = experiment_for(FindingFactory(created_by=user, kind="fix", visibility=Finding.Visibility.RESTRICTED))
    FindingAuthor.objects.create(finding=hidden.finding, user=invited, status=FindingAuthor.Status.INVITED)
    cases = [
        (stranger, public, 403),  # sees it, is no author
        (stranger, hidden, 404),  # does not see it
        (invited, hidden, 403),  # sees it (invited to sign it), is not an author yet
        (user, hidden, 201),
    ]
    for seed, (who, experiment, status) in enumerate(cases):
        url, body = _single(experiment.pk, seed)
        response = client_for(who).post(url, body, format="json")
        assert response.status_code == status, (who, experiment.finding.visibility, response.content[:300])
    missing = client_for(user).post(_single(10**9, 0)[0], _single(10**9, 0)[1], format="json")
    assert missing.status_code == 404
