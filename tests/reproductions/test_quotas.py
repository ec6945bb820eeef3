"""Per-user run quotas (registry.reproductions.quotas): caps on active runs and on runs per day,
checked under a lock with the insert; 429 + Retry-After beyond them; staff raise them; bounds on
an experiment's time and memory limits."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from registry.reproductions import quotas, services
from registry.reproductions.models import Experiment, Reproduction, Run, UserQuota
from tests.api.helpers import assert_error, counts
from tests.factories import FindingFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(user) -> Experiment:
    finding = FindingFactory(created_by=user)
    return services.experiment_create(finding=finding, user=user, plugin="echo", default_seeds=2, reproduce=False)


@pytest.fixture
def caps(settings):
    settings.QUOTA_ACTIVE_RUNS = 5
    settings.QUOTA_RUNS_PER_DAY = 8
    settings.QUOTA_ACTIVE_RETRY_AFTER_S = 30
    return settings


def _reproduce(client, experiment, seeds):
    return client.post(f"/api/v1/experiments/{experiment.pk}/reproductions/", {"seeds": seeds}, format="json")


def _finish_all() -> None:
    Run.objects.update(state=Run.State.SUCCEEDED, finished_at=timezone.now())


def test_beyond_the_active_cap_a_429_names_the_quota_and_its_use(caps, api, experiment):
    assert _reproduce(api, experiment, [0, 1, 2, 3]).status_code == 202
    before = counts()
    response = _reproduce(api, experiment, [4, 5])
    body = assert_error(response, 429, "seeds")
    assert (body["quota"], body["limit"], body["used"], body["requested"]) == ("active_runs", 5, 4, 2)
    assert response["Retry-After"] == "30" and body["retry_after"] == 30
    assert "quota" in body["detail"]
    assert counts() == before  # nothing created on refusal
    assert _reproduce(api, experiment, [4]).status_code == 202  # exactly up to the cap


def test_finished_runs_free_the_active_cap_but_not_the_daily_one(caps, api, experiment):
    assert _reproduce(api, experiment, [0, 1, 2, 3, 4]).status_code == 202
    assert_error(_reproduce(api, experiment, [5]), 429, "seeds")
    _finish_all()
    assert _reproduce(api, experiment, [5, 6, 7]).status_code == 202  # 8 today: the daily cap
    _finish_all()
    before = counts()
    response = _reproduce(api, experiment, [8])
    body = assert_error(response, 429, "seeds")
    assert (body["quota"], body["limit"], body["used"], body["requested"]) == ("runs_per_day", 8, 8, 1)
    # the oldest run leaves the 24-hour window in about a day
    assert 86_000 < int(response["Retry-After"]) <= 86_400
    assert counts() == before


def test_the_daily_cap_is_a_rolling_24_hours(caps, api, experiment):
    assert _reproduce(api, experiment, [0, 1, 2, 3]).status_code == 202
    _finish_all()
    Reproduction.objects.update(created_at=timezone.now() - timedelta(hours=20))
    quotas.runs_requested_rebuild()  # the hourly counts follow the runs' edited times
    assert _reproduce(api, experiment, [4, 5, 6, 7]).status_code == 202
    _finish_all()
    response = _reproduce(api, experiment, [8, 9])
    body = assert_error(response, 429, "seeds")
    assert body["quota"] == "runs_per_day"
    # the first four runs (20 h old) leave the window in about 4 h
    assert 4 * 3600 - 60 < int(response["Retry-After"]) <= 4 * 3600
    Reproduction.objects.filter(seeds=[0, 1, 2, 3]).update(created_at=timezone.now() - timedelta(hours=25))
    quotas.runs_requested_rebuild()
    assert _reproduce(api, experiment, [8, 9]).status_code == 202


def test_quotas_are_per_user(caps, api, client_for, other_user, experiment):
    assert _reproduce(api, experiment, [0, 1, 2, 3, 4]).status_code == 202
    assert _reproduce(client_for(other_user), experiment, [0, 1, 2, 3, 4]).status_code == 202


def test_auto_reproduce_on_experiment_create_is_within_the_quota(caps, api, user, experiment):
    assert _reproduce(api, experiment, [0, 1, 2, 3]).status_code == 202
    before = counts()
    response = api.post(
        f"/api/v1/findings/{experiment.finding_id}/experiments/",
        {"plugin": "echo", "default_seeds": 3}, format="json",
    )
    body = assert_error(response, 429, "reproduce")
    assert body["quota"] == "active_runs" and body["requested"] == 3
    assert counts() == before  # not even the experiment
    response = api.post(
        f"/api/v1/findings/{experiment.finding_id}/experiments/",
        {"plugin": "echo", "default_seeds": 3, "reproduce": False}, format="json",
    )
    assert response.status_code == 201


def test_rereproduce_is_within_the_quota(caps, api, user, experiment):
    services.experiment_create(finding=experiment.finding, user=user, plugin="echo", default_seeds=3,
                               reproduce=False)
    assert _reproduce(api, experiment, [0, 1]).status_code == 202
    before = counts()
    response = api.post(f"/api/v1/findings/{experiment.finding_id}/rereproduce/")
    assert_error(response, 429)  # 2 + 2 fit, the next 3 do not: all or nothing
    assert response.json()["quota"] == "active_runs" and "Retry-After" in response
    assert counts() == before


def test_self_reported_runs_count_against_the_daily_cap_only(caps, user):
    finding = FindingFactory(created_by=user)
    params = {"steps": 100, "eval_every": 25}
    experiment = services.experiment_create(
        finding=finding, user=user, plugin="grokking", params=params, reproduce=False
    )
    from registry.reproductions.self_reported import self_reported_run_record

    arm = {"fourier_sparsity": 0.3, "test_accuracy": 0.2, "steps_to_test_99": 80, "steps_to_train_99": 50}

    def record(seed: int) -> Run:
        return self_reported_run_record(
            experiment=experiment, user=user, seed=seed, params=params, hardware="cpu",
            measurements={"baseline": arm, "intervention": arm},
        )

    for seed in range(8):  # more than the active cap: self-reported runs are never active
        record(seed)
    with pytest.raises(quotas.QuotaExceeded) as refused:
        record(8)
    assert refused.value.quota == "runs_per_day" and refused.value.status == 429
    assert Run.objects.count() == 8


def test_dashboard_form_is_refused_with_429_beyond_the_quota(caps, client, user, experiment):
    client.force_login(user)
    url = f"/findings/{experiment.finding_id}/reproductions/"
    assert client.post(url, {"experiment": experiment.pk, "n_seeds": 5}).status_code == 302
    before = counts()
    response = client.post(url, {"experiment": experiment.pk, "n_seeds": 1})
    assert response.status_code == 429 and response["Retry-After"] == "30"
    assert "quota exceeded" in response.content.decode()
    assert counts() == before


# ---------------------------------------------------------------- staff raise a quota


def _quota_url(user) -> str:
    return f"/api/v1/users/{user.username}/quota/"


def test_the_user_sees_their_own_quota_and_use(caps, api, experiment):
    assert _reproduce(api, experiment, [0, 1, 2]).status_code == 202
    body = api.get("/api/v1/me/quota/").json()
    assert body["active_runs"] == {"limit": 5, "used": 3, "default": 5, "overridden": False}
    assert body["runs_per_day"] == {"limit": 8, "used": 3, "default": 8, "overridden": False}


def test_anonymous_has_no_quota_page(anon):
    assert anon.get("/api/v1/me/quota/").status_code in (401, 403)


def test_only_staff_read_or_change_a_users_quota(caps, anon, api, client_for, user, other_user):
    stranger = client_for(other_user)
    for client, status in ((anon, 401), (stranger, 403), (api, 403)):
        assert_error(client.get(_quota_url(user)), status)
        assert_error(client.patch(_quota_url(user), {"active_runs": 1000}, format="json"), status)
        assert_error(client.patch(_quota_url(other_user), {"active_runs": 1000}, format="json"), status)
    assert not UserQuota.objects.filter(active_runs=1000).exists()


def test_staff_raise_a_users_quota(caps, api, client_for, staff_user, user, experiment):
    staff = client_for(staff_user)
    assert _reproduce(api, experiment, [0, 1, 2, 3, 4]).status_code == 202
    assert_error(_reproduce(api, experiment, [5, 6]), 429, "seeds")

    response = staff.patch(_quota_url(user), {"active_runs": 7, "runs_per_day": 100}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["active_runs"] == {"limit": 7, "used": 5, "default": 5, "overridden": True}
    assert _reproduce(api, experiment, [5, 6]).status_code == 202
    assert api.get("/api/v1/me/quota/").json()["active_runs"]["limit"] == 7

    # null: back to the default
    response = staff.patch(_quota_url(user), {"active_runs": None}, format="json")
    assert response.json()["active_runs"]["overridden"] is False
    assert response.json()["runs_per_day"]["limit"] == 100
    assert staff.get(_quota_url(user)).json()["active_runs"]["limit"] == 5
    # a bad value names its field; an unknown user is a 404
    assert_error(staff.patch(_quota_url(user), {"active_runs": -1}, format="json"), 400, "active_runs")
    assert_error(staff.get("/api/v1/users/nobody-at-all/quota/"), 404)


def test_staff_have_the_default_caps_and_may_raise_their_own(caps, client_for, staff_user, experiment):
    staff = client_for(staff_user)
    assert _reproduce(staff, experiment, [0, 1, 2, 3, 4]).status_code == 202
    assert_error(_reproduce(staff, experiment, [5]), 429, "seeds")
    assert staff.patch(_quota_url(staff_user), {"active_runs": 6}, format="json").status_code == 200
    assert _reproduce(staff, experiment, [5]).status_code == 202


# ---------------------------------------------------------------- time and memory limits


def _create_experiment(api, finding_id, **fields):
    return api.post(
        f"/api/v1/findings/{finding_id}/experiments/",
        {"plugin": "echo", "reproduce": False, **fields}, format="json",
    )


def test_time_limit_is_bounded_by_the_setting(settings, api, experiment):
    settings.RUN_MAX_TIME_LIMIT_S = 3600
    before = counts()
    assert_error(_create_experiment(api, experiment.finding_id, time_limit_s=7 * 24 * 3600), 400, "time_limit_s")
    assert_error(_create_experiment(api, experiment.finding_id, time_limit_s=3601), 400, "time_limit_s")
    assert counts() == before
    response = _create_experiment(api, experiment.finding_id, time_limit_s=3600)
    assert response.status_code == 201 and response.json()["time_limit_s"] == 3600


def test_a_plugin_default_time_limit_is_capped_at_the_maximum(settings, user, experiment):
    settings.RUN_MAX_TIME_LIMIT_S = 20
    created = services.experiment_create(finding=experiment.finding, user=user, plugin="echo", reproduce=False)
    assert created.time_limit_s <= 20


def test_memory_limit_is_writable_within_the_bound(settings, api, experiment):
    settings.RUN_MAX_MEMORY_LIMIT_MB = 2048
    before = counts()
    assert_error(_create_experiment(api, experiment.finding_id, memory_limit_mb=4096), 400, "memory_limit_mb")
    assert_error(_create_experiment(api, experiment.finding_id, memory_limit_mb=0), 400, "memory_limit_mb")
    assert counts() == before
    response = _create_experiment(api, experiment.finding_id, memory_limit_mb=512)
    assert response.status_code == 201 and response.json()["memory_limit_mb"] == 512
    assert Experiment.objects.get(pk=response.json()["id"]).memory_limit_mb == 512
    response = _create_experiment(api, experiment.finding_id)
    assert response.json()["memory_limit_mb"] is None  # the worker's default


def test_gpu_without_a_gpu_worker_is_a_waiting_state_not_an_error(api, experiment):
    response = api.post(
        f"/api/v1/experiments/{experiment.pk}/reproductions/", {"n_seeds": 1, "device": "gpu"}, format="json"
    )
    assert response.status_code == 202
    assert response.json()["waiting_for_gpu_worker"] is True


# ---------------------------------------------------------------- the race


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("quota_row", [True, False], ids=["quota-row-exists", "first-request"])
def test_two_concurrent_requests_at_the_cap_cannot_both_pass(settings, monkeypatch, quota_row):
    """Each request counts, then (slowly) inserts: without the lock on the quota row both would
    see room for their 3 runs under a cap of 3 (with the row already there, only SELECT ... FOR
    UPDATE stands between them; on a user's first request, the row's insert does too)."""
    settings.QUOTA_ACTIVE_RUNS = 3
    user = UserFactory()
    if quota_row:
        UserQuota.objects.create(user=user)
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(finding=finding, user=user, plugin="echo", reproduce=False)
    monkeypatch.setattr(services, "runs_dispatch", lambda run_ids, **kwargs: None)
    counted = quotas.active_runs_used

    def slow_count(who):
        used = counted(who)
        time.sleep(0.5)  # the window between the count and the insert
        return used

    monkeypatch.setattr(quotas, "active_runs_used", slow_count)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def request(first_seed: int) -> None:
        try:
            barrier.wait(timeout=10)
            services.reproduction_request(experiment=experiment, user=user, seeds=[first_seed, first_seed + 1,
                                                                                   first_seed + 2])
            outcomes.append("passed")
        except quotas.QuotaExceeded as exc:
            outcomes.append(f"refused {exc.quota} used={exc.extra['used']}")
        finally:
            connection.close()

    threads = [threading.Thread(target=request, args=(seed,)) for seed in (0, 10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["passed", "refused active_runs used=3"]
    assert Run.objects.filter(reproduction__requested_by=user).count() == 3
