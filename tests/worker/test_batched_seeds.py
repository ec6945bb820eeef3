"""Seeds in parallel in the worker: with RUN_BATCH_SEEDS > 1, the run of a plugin that opts in
(``batched_seeds = True``) is trained with the other queued runs of its reproduction as one batched
model in one process (``run_seeds``); each run is still claimed, heartbeaten, finished and
recorded on its own. ``run_execute`` is called in-process (what a pool process calls), with real
child processes and PostgreSQL."""

import json
import threading

import pytest

from plugins.registry import register_temporarily
from registry.events.models import Event
from registry.reproductions import services
from registry.reproductions.models import Run
from tests.conftest import wait_for
from tests.factories import FindingFactory
from tests.fakes.plugins import BatchedEchoExperiment
from worker.runner import run_execute

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


@pytest.fixture
def batched(settings, monkeypatch):
    settings.RUN_BATCH_SEEDS = 4
    monkeypatch.setattr(services, "runs_dispatch", lambda run_ids, **kwargs: None)  # no worker takes them
    with register_temporarily(BatchedEchoExperiment):
        yield


def _request(user, seeds, plugin="echo_batched", params=None, **extra):
    finding = FindingFactory(created_by=user)
    params = {"effect": -0.25, "noise": 0.3, **extra} if params is None else params
    experiment = services.experiment_create(finding=finding, user=user, plugin=plugin, params=params,
                                            reproduce=False)
    reproduction = services.reproduction_request(experiment=experiment, user=user, seeds=seeds, device="cpu")
    return finding, list(reproduction.runs.order_by("seed"))


def _values(run: Run) -> dict:
    return {(m.arm, m.metric): m.value for m in run.measurements.all()}


def test_a_reproductions_runs_are_trained_as_one_batch_each_recorded_on_its_own(user, batched):
    finding, runs = _request(user, [5, 6, 7])
    outcome = run_execute(runs[1].pk, worker_host="test-host")  # any of them leads; the others join
    assert outcome.startswith("a batch of 3 runs: "), outcome
    assert outcome.count("succeeded") == 3
    for run in runs:  # each run's own message, when it comes, finds it taken
        assert run_execute(run.pk, worker_host="test-host").startswith("skipped")
    alone = {}
    with register_temporarily(BatchedEchoExperiment):  # the same seeds, each through `run`
        from interp_registry.sdk import run_locally
        for seed in (5, 6, 7):
            alone[seed], _ = run_locally(BatchedEchoExperiment, {"effect": -0.25, "noise": 0.3}, seed=seed)
    for run in Run.objects.filter(pk__in=[r.pk for r in runs]).order_by("seed"):
        assert run.state == "succeeded" and run.attempts == 1 and run.worker_host == "test-host"
        assert run.environment["seed"] == run.seed  # its own seed's environment
        assert run.environment["batch_seeds"] == [6, 5, 7]  # the leader's seed first
        assert run.environment["exit_code"] == 0
        values = _values(run)
        assert values == {(arm, metric): alone[run.seed][arm][metric] for arm in alone[run.seed]
                          for metric in alone[run.seed][arm]}
        assert f"echo_batched seed {run.seed} with [6, 5, 7]" in run.logs
        assert f"echo seed {run.seed}" in run.logs
        assert all(f"echo seed {other}" not in run.logs for other in (5, 6, 7) if other != run.seed)
        artifacts = {a.name: a for a in run.artifacts.all()}
        assert set(artifacts) == {"batch.json", "values.json"}
        with open(services.artifact_path(artifacts["batch.json"]), "rb") as stream:
            assert json.loads(stream.read()) == {"seed": run.seed, "batch": [6, 5, 7]}
        curve = run.series.get(name="loss", arm="baseline")
        assert curve.values == [float(run.seed)]
    started = Event.objects.filter(finding_id=finding.pk, type="run.started")
    assert sorted(e.payload["run"] for e in started) == sorted(r.pk for r in runs)
    assert sorted(e.payload.get("batch_of") for e in started if "batch_of" in e.payload) == [runs[1].pk] * 2
    assert Event.objects.filter(finding_id=finding.pk, type="run.finished").count() == 3


def test_batches_take_at_most_run_batch_seeds_runs_and_leave_the_rest_queued(user, batched, settings):
    settings.RUN_BATCH_SEEDS = 2
    _, runs = _request(user, [1, 2, 3])
    outcome = run_execute(runs[2].pk, worker_host="test-host")
    assert outcome.startswith("a batch of 2 runs: "), outcome
    states = dict(Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("seed", "state"))
    assert states == {1: "succeeded", 2: "queued", 3: "succeeded"}  # the leader, then the lowest seed
    assert run_execute(runs[1].pk, worker_host="test-host") == "succeeded"  # the last one, alone
    last = Run.objects.get(pk=runs[1].pk)
    assert "batch_seeds" not in last.environment and last.environment["seed"] == 2


@pytest.mark.parametrize("size", [1, 4])
def test_no_batch_without_the_plugins_opt_in_or_with_run_batch_seeds_1(user, batched, settings, size):
    settings.RUN_BATCH_SEEDS = size
    plugin = "echo" if size > 1 else "echo_batched"
    _, runs = _request(user, [1, 2], plugin=plugin)
    assert run_execute(runs[0].pk, worker_host="test-host") == "succeeded"
    assert Run.objects.get(pk=runs[1].pk).state == "queued"
    assert "batch_seeds" not in Run.objects.get(pk=runs[0].pk).environment


def test_one_runs_invalid_result_fails_that_run_only(user, batched):
    _, runs = _request(user, [1, 2, 3], bad_seed=2)
    outcome = run_execute(runs[0].pk, worker_host="test-host")
    assert outcome.count("succeeded") == 2 and "failed" in outcome, outcome
    by_seed = {run.seed: run for run in Run.objects.filter(pk__in=[r.pk for r in runs])}
    assert by_seed[1].state == by_seed[3].state == "succeeded"
    assert by_seed[2].state == "failed" and "intervention" in by_seed[2].error, by_seed[2].error
    assert by_seed[2].measurements.count() == 0
    assert {a.name for a in by_seed[2].artifacts.all()} == {"batch.json", "values.json"}  # kept, marked failed


def test_a_failing_batch_fails_each_of_its_runs_with_the_error(user, batched):
    _, runs = _request(user, [1, 2], crash=True)
    outcome = run_execute(runs[0].pk, worker_host="test-host")
    assert outcome.count("failed") == 2, outcome
    for run in Run.objects.filter(pk__in=[r.pk for r in runs]):
        assert run.state == "failed"
        assert "the batch of seeds [1, 2] broke" in run.error
        assert "RuntimeError" in run.traceback
        assert f"echo_batched seed {run.seed} with [1, 2]" in run.logs
        assert run.series.get(name="loss", arm="baseline").values == [float(run.seed)]  # its curve so far


def _in_thread(run_id: int) -> tuple[threading.Thread, list[str]]:
    outcome: list[str] = []

    def execute() -> None:
        from django.db import connections

        try:
            outcome.append(run_execute(run_id, worker_host="test-host"))
        finally:
            connections.close_all()

    thread = threading.Thread(target=execute)
    thread.start()
    return thread, outcome


def test_a_run_cancelled_alone_stops_only_itself(user, batched):
    _, runs = _request(user, [1, 2], sleep_s=5.0)  # long enough for a heartbeat to see the cancel
    thread, outcome = _in_thread(runs[0].pk)
    try:
        wait_for(lambda: Run.objects.filter(pk=runs[1].pk, state="running", progress__gt=0).exists(), timeout=30)
        services.run_cancel(run=Run.objects.select_related("reproduction__experiment").get(pk=runs[1].pk),
                            user=user)
    finally:
        thread.join(60)
    assert outcome and "stopped: the run was cancelled" in outcome[0], outcome
    assert Run.objects.get(pk=runs[0].pk).state == "succeeded"
    cancelled = Run.objects.get(pk=runs[1].pk)
    assert cancelled.state == "cancelled" and cancelled.measurements.count() == 0


def test_cancelling_every_run_of_a_batch_stops_the_process(user, batched):
    _, runs = _request(user, [1, 2], sleep_s=30.0)
    thread, outcome = _in_thread(runs[0].pk)
    try:
        wait_for(lambda: Run.objects.filter(pk__in=[r.pk for r in runs], state="running",
                                            progress__gt=0).count() == 2, timeout=30)
        for run in runs:
            services.run_cancel(run=Run.objects.select_related("reproduction__experiment").get(pk=run.pk), user=user)
    finally:
        thread.join(60)
    assert not thread.is_alive()
    assert outcome and outcome[0].count("stopped: the run was cancelled") == 2, outcome
    assert set(Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("state", flat=True)) == {"cancelled"}


def test_run_claim_batch_claims_only_queued_runs_of_the_same_reproduction(user, batched):
    _, runs = _request(user, [1, 2, 3, 4])
    _, others = _request(user, [1])
    lead = services.run_claim_loaded(run_id=runs[0].pk, worker_host="a")[1]
    Run.objects.filter(pk=runs[2].pk).update(state="cancelled")
    claimed = services.run_claim_batch(lead=lead, limit=5, worker_host="a")
    assert [run.seed for _, run in claimed] == [2, 4]
    assert all(run.state == "running" and run.claim_token == token for token, run in claimed)
    assert len({token for token, _ in claimed}) == 2
    assert services.run_claim_batch(lead=lead, limit=5, worker_host="b") == []  # nothing queued is left
    assert Run.objects.get(pk=others[0].pk).state == "queued"
    assert services.run_claim_batch(lead=lead, limit=0, worker_host="a") == []


def test_a_built_in_plugin_trained_as_one_batch_in_the_worker_matches_each_seed_alone(user, settings, monkeypatch):
    """superposition opts in: its runs trained together by the worker give, per run, what the
    same seed gives alone, within the plugin's stated tolerance."""
    from interp_registry.sdk import NotReached, run_locally

    from plugins.registry import get_plugin

    settings.RUN_BATCH_SEEDS = 2
    monkeypatch.setattr(services, "runs_dispatch", lambda run_ids, **kwargs: None)
    plugin = get_plugin("superposition")
    assert plugin.batched_seeds
    _, runs = _request(user, [0, 1], plugin="superposition", params=dict(plugin.presets["tiny"]))
    assert run_execute(runs[0].pk, worker_host="test-host").count("succeeded") == 2
    for run in Run.objects.filter(pk__in=[r.pk for r in runs]):
        assert run.environment["batch_seeds"] == [0, 1]
        alone, _ = run_locally(plugin, preset="tiny", seed=run.seed)
        values = _values(run)
        assert set(values) == {(arm, metric) for arm in alone for metric in alone[arm]}
        for (arm, metric), value in values.items():
            expected = alone[arm][metric]
            assert not isinstance(expected, NotReached)
            assert abs(value - expected) <= plugin.batched_seeds_tolerance * max(1.0, abs(expected)), (arm, metric)


def test_the_reaper_gives_a_batch_its_runs_time_limits_together(user, batched):
    """The worker lets a batch of n runs take n x the experiment's time limit; the reaper, which
    times out a run that outlived its limit (plus the worker's grace and save retries), must too."""
    from datetime import timedelta

    from django.conf import settings as django_settings
    from django.utils import timezone

    _, runs = _request(user, [1, 2, 3, 4])
    lead = services.run_claim_loaded(run_id=runs[0].pk, worker_host="a")[1]
    claimed = services.run_claim_batch(lead=lead, limit=2, worker_host="a")
    assert lead.batch_size == 3 and [run.batch_size for _, run in claimed] == [3, 3]
    batch_ids = [lead.pk, *(run.pk for _, run in claimed)]
    assert set(Run.objects.filter(pk__in=batch_ids).values_list("batch_size", flat=True)) == {3}
    alone = services.run_claim_loaded(run_id=runs[3].pk, worker_host="b")[1]
    assert alone.batch_size == 1
    limit = lead.reproduction.experiment.time_limit_s
    margin = django_settings.RUN_KILL_GRACE_S + django_settings.RUN_SAVE_RETRY_S + 60
    assert services.run_backstop_s(limit) == limit + margin  # one run: as before batches
    assert services.run_backstop_s(limit, 3) == 3 * (limit + django_settings.RUN_SAVE_RETRY_S) + margin - \
        django_settings.RUN_SAVE_RETRY_S
    now = timezone.now()
    # all four started two limits (plus the margin) ago and are still beating
    Run.objects.filter(pk__in=[*batch_ids, alone.pk]).update(
        started_at=now - timedelta(seconds=2 * limit + margin + 1), heartbeat_at=now)
    services.runs_reap(now=now)
    states = dict(Run.objects.filter(pk__in=[*batch_ids, alone.pk]).values_list("pk", "state"))
    assert [states[pk] for pk in batch_ids] == ["running"] * 3  # within the batch's backstop
    assert states[alone.pk] == "timed_out"
    Run.objects.filter(pk__in=batch_ids).update(heartbeat_at=now + timedelta(seconds=3 * limit))
    past = services.run_backstop_s(limit, 3) - (2 * limit + margin + 1) + 1
    services.runs_reap(now=now + timedelta(seconds=past))  # past the batch's backstop
    assert set(Run.objects.filter(pk__in=batch_ids).values_list("state", flat=True)) == {"timed_out"}
    # a run requeued and claimed again alone is back to one run's limit
    Run.objects.filter(pk=claimed[0][1].pk).update(state="queued")
    assert services.run_claim_loaded(run_id=claimed[0][1].pk, worker_host="c")[1].batch_size == 1


def test_each_run_of_a_batch_keeps_its_own_heartbeat_and_liveness_lock(user, batched, settings):
    """One run's progress must not stand in for another's heartbeat (the quiet run would look dead
    to the reaper and be run again elsewhere); each run's liveness lock is held while it trains."""
    from django.db import connection, transaction

    from worker.liveness import liveness_lock_free

    settings.RUN_HEARTBEAT_INTERVAL_S = 1.0  # above the progress interval (0.5 s)
    import time

    _, runs = _request(user, [1, 2], sleep_s=6.0, chatty_first=True)
    thread, outcome = _in_thread(runs[0].pk)
    gaps: list[float] = []
    locks_checked = False
    try:
        while thread.is_alive():
            beats = dict(Run.objects.filter(pk__in=[r.pk for r in runs], state="running", progress__gt=0)
                         .values_list("pk", "heartbeat_at"))
            if len(beats) == 2:  # the chatty run beats every 0.5 s; the quiet one must every 1 s
                gaps.append((beats[runs[0].pk] - beats[runs[1].pk]).total_seconds())
                if not locks_checked:
                    locks_checked = True
                    for run in runs:
                        with transaction.atomic(), connection.cursor() as cursor:
                            assert not liveness_lock_free(cursor, run.pk)
            time.sleep(0.2)
    finally:
        thread.join(60)
    assert locks_checked and len(gaps) > 8, gaps
    assert max(gaps) < 2.5, gaps  # a shared clock left the quiet run's beat at ~2 s: gaps of 3-4 s
    assert outcome and outcome[0].count("succeeded") == 2, outcome


def test_a_batch_leaves_no_scratch_directory_behind(user, batched, settings, tmp_path):
    from worker.runner import cleanups_finish

    settings.RUN_SCRATCH_DIR = str(tmp_path)
    _, runs = _request(user, [1, 2, 3])
    assert run_execute(runs[0].pk, worker_host="test-host").count("succeeded") == 3
    cleanups_finish()
    assert list(tmp_path.iterdir()) == []


def test_a_batch_started_the_fresh_exec_way(user, batched, settings):
    settings.RUN_CHILD_START = "spawn"
    _, runs = _request(user, [3, 4])
    assert run_execute(runs[0].pk, worker_host="test-host").count("succeeded") == 2
    for run in Run.objects.filter(pk__in=[r.pk for r in runs]):
        assert run.environment["child_started_by"] == "spawn" and run.environment["batch_seeds"] == [3, 4]
        assert f"echo seed {run.seed}" in run.logs


def test_channel_messages_reach_only_the_run_they_name(tmp_path):
    import io

    from worker.sandbox import ChildRun

    child = ChildRun(run_id=1, plugin="x:y", params={}, seed=0, device="cpu", deterministic=False,
                     scratch_root=str(tmp_path), batch=[(2, 7)])
    try:
        lead, other = child.members
        assert child.spec["batch"] == [{"seed": 0, "scratch": str(lead.scratch)},
                                       {"seed": 7, "scratch": str(other.scratch)}]
        lines = [{"t": "log", "line": "a", "r": 0}, {"t": "log", "line": "b", "r": 1},
                 {"t": "log", "line": "c", "r": 2}, {"t": "log", "line": "d", "r": "1"},
                 {"t": "log", "line": "e", "r": True},
                 {"t": "log", "line": "f", "r": -1}, {"t": "result", "r": 1}, {"t": "error", "error": "broke"}]
        child._read_channel(io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode()))
        assert list(lead.lines) == ["a"] and list(other.lines) == ["b"]
        assert other.has_result and not lead.has_result
        assert lead.error["error"] == other.error["error"] == "broke"  # the process's own message: both
    finally:
        child.cleanup()
    assert list(tmp_path.iterdir()) == []


def test_one_run_never_takes_a_tagged_message(tmp_path):
    import io

    from worker.sandbox import ChildRun

    child = ChildRun(run_id=1, plugin="x:y", params={}, seed=0, device="cpu", deterministic=False,
                     scratch_root=str(tmp_path))
    try:
        assert "batch" not in child.spec and child.members == [child]
        lines = [{"t": "log", "line": "a", "r": 0}, {"t": "log", "line": "b"}]
        child._read_channel(io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode()))
        assert list(child.lines) == ["b"]
    finally:
        child.cleanup()


def test_dispatch_and_the_batch_agree_on_time_limits(user, batched, settings):
    """Celery's backstop limit of a run that may be batched allows RUN_BATCH_SEEDS runs' limits;
    a worker whose message allows fewer batches only as many as fit."""
    assert services.batch_seeds_allowed("echo_batched") == 4
    assert services.batch_seeds_allowed("echo") == 1
    assert services.batch_seeds_allowed("no-such-plugin") == 1
    settings.RUN_BATCH_SEEDS = 1
    assert services.batch_seeds_allowed("echo_batched") == 1
    settings.RUN_BATCH_SEEDS = 4
    _, runs = _request(user, [1, 2, 3, 4])
    limit = runs[0].reproduction.experiment.time_limit_s
    room = services.run_backstop_s(limit, 2)  # a message that allows two runs together
    outcome = run_execute(runs[0].pk, worker_host="test-host", task_soft_limit_s=room)
    assert outcome.startswith("a batch of 2 runs"), outcome


def test_dispatch_gives_a_run_that_may_be_batched_the_batchs_time_limit(user, settings, monkeypatch):
    from worker.celery import app

    sent: dict[int, dict] = {}
    monkeypatch.setattr(app, "send_task", lambda name, args, **options: sent.__setitem__(args[0], options))
    settings.RUN_BATCH_SEEDS = 3
    with register_temporarily(BatchedEchoExperiment):
        _, batched_runs = _request(user, [1, 2])
        _, single_runs = _request(user, [1], plugin="echo")
    margin = settings.RUN_KILL_GRACE_S + settings.RUN_SAVE_RETRY_S + 60
    limit = batched_runs[0].reproduction.experiment.time_limit_s
    backstop = 3 * (limit + settings.RUN_SAVE_RETRY_S) + settings.RUN_KILL_GRACE_S + 60
    assert sent[batched_runs[0].pk]["soft_time_limit"] == backstop
    assert sent[batched_runs[0].pk]["time_limit"] == backstop + 30
    assert services.runs_within_backstop(limit, backstop) == 3
    assert services.runs_within_backstop(limit, backstop - 1) == 2
    single_limit = single_runs[0].reproduction.experiment.time_limit_s
    assert sent[single_runs[0].pk]["soft_time_limit"] == single_limit + margin  # as before batches


def test_a_timed_out_save_is_recorded_as_timed_out(user, monkeypatch):
    """Celery's soft limit striking while a result is saved records the run as timed out."""
    from celery.exceptions import SoftTimeLimitExceeded

    monkeypatch.setattr(services, "runs_dispatch", lambda run_ids, **kwargs: None)
    _, runs = _request(user, [1], plugin="echo")

    def strike(**kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(services, "run_succeed", strike)
    assert run_execute(runs[0].pk, worker_host="test-host") == "timed_out"
    assert Run.objects.get(pk=runs[0].pk).state == "timed_out"


def test_the_runs_waiting_for_their_save_keep_their_heartbeat(user, batched, settings, monkeypatch):
    """A batch's results are saved one after another: a slow save must not let the runs still
    waiting look dead (the reaper or their own message would run them again)."""
    import time

    settings.RUN_HEARTBEAT_INTERVAL_S = 0.3
    _, runs = _request(user, [1, 2, 3])
    real = services.run_succeed
    seen: list[tuple] = []

    def slow(**kwargs):
        if not seen:  # the first save holds its run's row, as its transaction does
            from django.db import transaction

            before = Run.objects.get(pk=runs[2].pk).heartbeat_at
            with transaction.atomic():
                Run.objects.select_for_update().get(pk=kwargs["run_id"])
                time.sleep(1.5)
            seen.append((before, Run.objects.get(pk=runs[2].pk).heartbeat_at))
        return real(**kwargs)

    monkeypatch.setattr(services, "run_succeed", slow)
    assert run_execute(runs[0].pk, worker_host="test-host").count("succeeded") == 3
    before, after = seen[0]
    assert (after - before).total_seconds() >= 0.9, seen  # beaten during the first run's save


def test_a_task_time_limit_while_a_batch_is_saved_times_out_the_rest(user, batched, monkeypatch):
    from celery.exceptions import SoftTimeLimitExceeded

    _, runs = _request(user, [1, 2, 3])
    real = services.run_succeed
    calls: list[int] = []

    def strike_second(**kwargs):
        calls.append(kwargs["run_id"])
        if len(calls) == 2:
            raise SoftTimeLimitExceeded()
        return real(**kwargs)

    monkeypatch.setattr(services, "run_succeed", strike_second)
    assert run_execute(runs[0].pk, worker_host="test-host") == "timed_out"
    states = dict(Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("pk", "state"))
    assert states == {calls[0]: "succeeded", runs[1].pk: "timed_out", runs[2].pk: "timed_out"}
    kept = Run.objects.get(pk=runs[1].pk)
    assert kept.environment["batch_seeds"] == [1, 2, 3] and kept.environment["exit_code"] == 0
