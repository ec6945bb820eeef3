"""The daily quota's count from hourly rows (registry.reproductions.quotas): the window's whole
hours are summed from ``RunsRequestedHour``, only its first, partial hour is counted run by run, so
the check costs the same at run 10 and run 100,000; deleted runs stay counted; the rows are
rebuilt from the runs (the migration) and pruned as hours pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from registry.reproductions import quotas, services
from registry.reproductions.models import Reproduction, Run, RunsRequestedHour
from registry.reproductions.self_reported import self_reported_run_record
from tests.api.helpers import assert_error
from tests.factories import FindingFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(user):
    finding = FindingFactory(created_by=user)
    return services.experiment_create(finding=finding, user=user, plugin="echo", default_seeds=2, reproduce=False)


def _reproduce(client, experiment, seeds):
    return client.post(f"/api/v1/experiments/{experiment.pk}/reproductions/", {"seeds": seeds}, format="json")


def _rows_in_window(user, now: datetime) -> int:
    return Run.objects.filter(reproduction__requested_by=user, reproduction__created_at__gt=now - quotas.DAY).count()


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def test_each_request_adds_its_runs_to_the_hour_of_its_reproduction(api, user, experiment, mid_hour_clock):
    assert _reproduce(api, experiment, [0, 1, 2]).status_code == 202
    assert _reproduce(api, experiment, [3]).status_code == 202
    created = Reproduction.objects.order_by("pk").first().created_at
    hours = list(RunsRequestedHour.objects.filter(user=user).values_list("hour", "runs"))
    assert hours == [(_hour(created), 4)]
    assert quotas.runs_today_used(user) == 4


def test_self_reported_runs_are_recorded_too(user):
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(finding=finding, user=user, plugin="echo", reproduce=False)
    params = experiment.params
    for seed in range(3):
        self_reported_run_record(experiment=experiment, user=user, seed=seed, params=params, hardware="cpu",
                                 measurements={"baseline": {"risk": 1.0, "skill": 1.0, "width": 3.0},
                                               "intervention": {"risk": 0.5, "skill": 1.0, "width": 3.0}})
    assert sum(RunsRequestedHour.objects.filter(user=user).values_list("runs", flat=True)) == 3
    assert quotas.runs_today_used(user) == 3


def test_the_count_reads_the_hourly_rows_not_the_runs(api, user, experiment, settings, mid_hour_clock):
    settings.QUOTA_RUNS_PER_DAY = 50
    assert _reproduce(api, experiment, [0, 1]).status_code == 202
    # the hourly row says far more than the runs stored: the check must follow the row
    RunsRequestedHour.objects.filter(user=user).update(runs=49)
    assert quotas.runs_today_used(user) == 49
    body = assert_error(_reproduce(api, experiment, [2, 3]), 429, "seeds")
    assert (body["quota"], body["used"]) == ("runs_per_day", 49)


def test_deleted_runs_stay_counted(api, user, experiment, settings, mid_hour_clock):
    settings.QUOTA_RUNS_PER_DAY = 4
    assert _reproduce(api, experiment, [0, 1, 2, 3]).status_code == 202
    Run.objects.update(state=Run.State.SUCCEEDED, finished_at=timezone.now())
    Reproduction.objects.all().delete()
    assert Run.objects.count() == 0
    body = assert_error(_reproduce(api, experiment, [4]), 429, "seeds")
    assert (body["quota"], body["used"]) == ("runs_per_day", 4)
    # their times are gone with them: they were requested by now at the latest, so a day from now
    assert 86_000 < body["retry_after"] <= 86_400


@pytest.mark.parametrize("past_the_hour", [timedelta(0), timedelta(microseconds=1), timedelta(minutes=1, seconds=17),
                                           timedelta(minutes=29), timedelta(minutes=59, seconds=59)])
def test_the_count_matches_the_runs_across_the_window_edge(user, experiment, past_the_hour):
    # runs at many ages around the window's start (some exactly on an hour, or exactly 24 hours
    # old), each recorded by runs_requested_record as a request records its runs
    now = _hour(timezone.now()) + past_the_hour
    ages = [timedelta(minutes=5), timedelta(minutes=61), timedelta(hours=10), timedelta(hours=23, minutes=10),
            timedelta(hours=23, minutes=50), timedelta(hours=24) - timedelta(microseconds=1), timedelta(hours=24),
            timedelta(hours=24, microseconds=1), timedelta(hours=24, minutes=40), timedelta(hours=26),
            past_the_hour + timedelta(hours=23)]  # exactly on an hour
    for seed, age in enumerate(ages):
        with transaction.atomic():
            reproduction = Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=[seed, seed])
            Run.objects.bulk_create([Run(reproduction=reproduction, seed=seed, state=Run.State.SUCCEEDED),
                                     Run(reproduction=reproduction, seed=seed + 100, state=Run.State.SUCCEEDED)])
            Reproduction.objects.filter(pk=reproduction.pk).update(created_at=now - age)
            reproduction.refresh_from_db()
            quotas.runs_requested_record(user=user, runs_at=[(reproduction.created_at, 2)])
    for later in (now, now + timedelta(microseconds=1), now + timedelta(minutes=3), now + timedelta(minutes=45),
                  now + timedelta(hours=2)):
        assert quotas.runs_today_used(user, now=later) == _rows_in_window(user, later), later


def test_the_rebuild_counts_runs_made_before_the_rows_existed(user, other_user, experiment):
    for who, seeds in ((user, [0, 1, 2]), (other_user, [0])):
        reproduction = Reproduction.objects.create(experiment=experiment, requested_by=who, seeds=seeds)
        Run.objects.bulk_create([Run(reproduction=reproduction, seed=s) for s in seeds])
    old = Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=[9])
    Run.objects.create(reproduction=old, seed=9)
    Reproduction.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=30))
    assert RunsRequestedHour.objects.count() == 0  # made without a request: not recorded
    assert quotas.runs_today_used(user) == 0
    quotas.runs_requested_rebuild(users=[user])
    assert (quotas.runs_today_used(user), quotas.runs_today_used(other_user)) == (3, 0)
    quotas.runs_requested_rebuild()
    assert (quotas.runs_today_used(user), quotas.runs_today_used(other_user)) == (3, 1)


def test_rows_that_left_the_window_are_deleted_when_a_new_hour_starts(api, user, experiment, mid_hour_clock):
    stale = _hour(timezone.now()) - timedelta(hours=30)
    in_window = _hour(timezone.now() - quotas.DAY) + quotas.HOUR  # the window's first whole hour
    RunsRequestedHour.objects.create(user=user, hour=stale, runs=7)
    RunsRequestedHour.objects.create(user=user, hour=in_window, runs=5)
    assert _reproduce(api, experiment, [0]).status_code == 202
    assert not RunsRequestedHour.objects.filter(hour=stale).exists()
    assert RunsRequestedHour.objects.filter(hour=in_window, runs=5).exists()
    assert quotas.runs_today_used(user) == 6


def test_retry_after_follows_the_partial_hour_then_the_hourly_rows(api, user, experiment, settings, mid_hour_clock):
    settings.QUOTA_RUNS_PER_DAY = 6
    now = timezone.now()
    # two runs 23 h 55 min old (the window's partial first hour), three 20 h old, one now
    for seeds, age in (([0, 1], timedelta(hours=23, minutes=55)), ([2, 3, 4], timedelta(hours=20))):
        reproduction = Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=seeds)
        Run.objects.bulk_create([Run(reproduction=reproduction, seed=s, state=Run.State.SUCCEEDED) for s in seeds])
        Reproduction.objects.filter(pk=reproduction.pk).update(created_at=now - age)
    quotas.runs_requested_rebuild(users=[user])
    assert _reproduce(api, experiment, [5]).status_code == 202
    Run.objects.update(state=Run.State.SUCCEEDED)
    # one more needs one run to leave: the oldest, in 5 minutes
    body = assert_error(_reproduce(api, experiment, [6]), 429, "seeds")
    assert 4 * 60 < body["retry_after"] <= 5 * 60
    # three more need three to leave: the two of the partial hour and the oldest of the 20-hour ones
    body = assert_error(_reproduce(api, experiment, [6, 7, 8]), 429, "seeds")
    assert 4 * 3600 - 60 < body["retry_after"] <= 4 * 3600
    # one of those 20-hour runs deleted: its hour still counts three; the answer is never early
    Run.objects.filter(seed=2).delete()
    body = assert_error(_reproduce(api, experiment, [6, 7, 8]), 429, "seeds")
    assert 4 * 3600 - 60 < body["retry_after"] <= 4 * 3600


def test_the_check_costs_the_same_statements_with_many_runs_today(api, user, experiment, mid_hour_clock):
    def statements(seed: int) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert _reproduce(api, experiment, [seed]).status_code == 202
        return len(ctx.captured_queries)

    statements(0)  # the quota row is made on the first request
    first = statements(1)
    reproduction = Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=list(range(500)))
    Run.objects.bulk_create([Run(reproduction=reproduction, seed=s, state=Run.State.SUCCEEDED) for s in range(500)])
    quotas.runs_requested_rebuild(users=[user])
    assert quotas.runs_today_used(user) == 502
    assert statements(1000) == first



def test_the_recount_command_rebuilds_the_rows_under_each_user_s_lock(user, other_user, experiment):
    from io import StringIO

    from django.core.management import CommandError, call_command

    for who, seeds in ((user, [0, 1]), (other_user, [0, 1, 2])):
        reproduction = Reproduction.objects.create(experiment=experiment, requested_by=who, seeds=seeds)
        Run.objects.bulk_create([Run(reproduction=reproduction, seed=s) for s in seeds])
    RunsRequestedHour.objects.create(user=user, hour=_hour(timezone.now()) - timedelta(hours=3), runs=40)
    out = StringIO()
    call_command("quota_recount", stdout=out)
    assert "2 hourly row(s) written" in out.getvalue()
    assert (quotas.runs_today_used(user), quotas.runs_today_used(other_user)) == (2, 3)
    call_command("quota_recount", "--user", other_user.username, stdout=out)
    with pytest.raises(CommandError, match="no such user: nobody"):
        call_command("quota_recount", "--user", "nobody")
