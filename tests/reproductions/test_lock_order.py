"""Lock order: a self-reported result and a new experiment on the same finding by the same user,
at the same moment, both succeed (each takes the finding's effects row before the user's quota
row); the reverse order in one of them was a deadlock PostgreSQL broke by failing one."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from registry.reproductions import self_reported, services
from tests.factories import FindingFactory, UserFactory

ARM = {"fourier_sparsity": 0.3, "test_accuracy": 0.2, "steps_to_test_99": 80, "steps_to_train_99": 50}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_self_reported_result_and_experiment_create_do_not_deadlock(monkeypatch):
    user = UserFactory()
    finding = FindingFactory(created_by=user)
    params = {"steps": 100, "eval_every": 25}
    experiment = services.experiment_create(finding=finding, user=user, plugin="grokking", params=params,
                                            reproduce=False)
    monkeypatch.setattr(services, "runs_dispatch", lambda run_ids, **kwargs: None)
    # no recompute reaches a worker: one still holding row locks would deadlock the flush after
    # the test (this test is about the two requests' own locks)
    from registry.effects import services as effects_services

    monkeypatch.setattr(effects_services, "effects_recompute_enqueue", lambda finding_id, **options: None)
    # both transactions meet here, each after its first lock (with the fix, one waits for the
    # other's first lock before it gets here, and the barrier lets it through after 3 s)
    barrier = threading.Barrier(2)
    original = services.metric_catalogue_sync

    def sync(plugin):
        try:
            barrier.wait(timeout=3)
        except threading.BrokenBarrierError:
            pass
        return original(plugin)

    monkeypatch.setattr(services, "metric_catalogue_sync", sync)
    monkeypatch.setattr(self_reported, "metric_catalogue_sync", sync)
    outcomes: list[str] = []

    def in_thread(name, call):
        def target():
            try:
                call()
                outcomes.append(f"{name} ok")
            except Exception as exc:  # noqa: BLE001 - the outcome is the assertion
                outcomes.append(f"{name} {type(exc).__name__}: {str(exc)[:200]}")
            finally:
                connection.close()

        return threading.Thread(target=target)

    threads = [
        in_thread("self-reported", lambda: self_reported.self_reported_run_record(
            experiment=experiment, user=user, seed=1, params=params, hardware="cpu",
            measurements={"baseline": ARM, "intervention": ARM})),
        in_thread("experiment", lambda: services.experiment_create(
            finding=finding, user=user, plugin="echo", reproduce=True)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["experiment ok", "self-reported ok"], outcomes
