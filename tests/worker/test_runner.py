"""The runner called in-process (no broker): environment capture and the deterministic setting."""

import pytest
import torch
from django.test import override_settings

from registry.reproductions import services
from registry.reproductions.models import Run
from tests.factories import FindingFactory
from worker.runner import run_execute

pytestmark = pytest.mark.django_db(transaction=True)


@override_settings(RUN_DETERMINISTIC=True)
def test_runner_records_environment_and_deterministic_mode(user):
    before = torch.are_deterministic_algorithms_enabled()
    try:
        finding = FindingFactory(created_by=user)
        experiment = services.experiment_create(finding=finding, user=user, plugin="echo", reproduce=False)
        reproduction = services.reproduction_request(experiment=experiment, user=user, seeds=[4], device="gpu")
        run = reproduction.runs.get()
        assert run_execute(run.pk, worker_host="test-host") == "succeeded"
        assert run_execute(run.pk, worker_host="test-host").startswith("skipped")  # a duplicate does nothing
    finally:
        torch.use_deterministic_algorithms(before)
    run = Run.objects.get(pk=run.pk)
    env = run.environment
    assert env["deterministic"] is True and env["seed"] == 4
    assert env["torch"] == torch.__version__ and env["plugin_version"] == "1.0.0"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert env["device"] == expected and run.worker_host == "test-host"
    if expected == "cpu":
        assert "a GPU was requested but this worker has none" in run.logs
    assert env["wall_time_s"] >= 0


@pytest.mark.parametrize("start", ["zygote", "spawn"])
def test_runner_starts_cpu_runs_as_configured(user, settings, monkeypatch, start):
    """RUN_CHILD_START: a CPU run is forked from the worker's zygote, or started fresh; the same
    result either way, and the run's environment says which."""
    from worker.zygote import zygote_stop

    settings.RUN_CHILD_START = start
    monkeypatch.setattr(services, "runs_dispatch", lambda run_ids, **kwargs: None)  # no worker takes them
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(finding=finding, user=user, plugin="echo", params={"effect": -0.25},
                                            reproduce=False)
    try:
        for seed in (1, 2):
            run = services.reproduction_request(experiment=experiment, user=user, seeds=[seed], device="cpu").runs.get()
            assert run_execute(run.pk, worker_host="test-host") == "succeeded"
            run = Run.objects.get(pk=run.pk)
            assert run.environment["child_started_by"] == start
            assert run.environment["exit_code"] == 0 and run.environment["seed"] == seed
            values = {(m.arm, m.metric): m.value for m in run.measurements.all()}
            assert values[("intervention", "risk")] == pytest.approx(values[("baseline", "risk")] - 0.25)
            assert run.artifacts.get().name == "values.json"
    finally:
        zygote_stop()


def test_a_running_runs_log_is_stored_while_it_runs(user, monkeypatch):
    """The log used to be stored only when the run ended: the run page said "its log appears here
    as it writes it" and showed nothing for the whole run. It is stored with the heartbeat (at most
    every LOG_WRITE_INTERVAL_S) whenever it changed."""
    import threading

    from django.db import connections

    from tests.conftest import wait_for

    monkeypatch.setattr(services, "runs_dispatch", lambda run_ids, **kwargs: None)  # no worker takes them
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(finding=finding, user=user, plugin="echo", params={"sleep_s": 6.0},
                                            reproduce=False)
    run = services.reproduction_request(experiment=experiment, user=user, seeds=[3], device="cpu").runs.get()
    outcome: list[str] = []

    def execute() -> None:
        try:
            outcome.append(run_execute(run.pk, worker_host="test-host"))
        finally:
            connections.close_all()

    thread = threading.Thread(target=execute)
    thread.start()
    try:
        wait_for(lambda: "echo seed 3" in Run.objects.get(pk=run.pk).logs, timeout=20)
        assert Run.objects.get(pk=run.pk).state == Run.State.RUNNING  # seen while it runs, not after
    finally:
        thread.join(timeout=60)
    assert outcome == ["succeeded"]
    assert "echo seed 3" in Run.objects.get(pk=run.pk).logs


def test_a_claimed_attempt_starts_with_an_empty_log(user, monkeypatch):
    """Logs are now stored during a run: a requeued run's earlier attempt's lines must not be
    shown as the new attempt's (nor stay beside its error when it fails before writing any)."""
    monkeypatch.setattr(services, "runs_dispatch", lambda run_ids, **kwargs: None)
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(finding=finding, user=user, plugin="echo", reproduce=False)
    run = services.reproduction_request(experiment=experiment, user=user, seeds=[0], device="cpu").runs.get()
    Run.objects.filter(pk=run.pk).update(logs="attempt 1's lines", attempts=1)  # requeued by the reaper
    assert services.run_claim(run_id=run.pk, worker_host="second") is not None
    assert Run.objects.get(pk=run.pk).logs == ""
