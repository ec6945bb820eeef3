"""The run state machine: one table of allowed transitions applied as compare-and-set."""

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from registry.events.models import Event
from registry.reproductions import services
from registry.reproductions.models import TERMINAL_STATES, Measurement, Run
from tests.factories import FindingFactory
from worker.liveness import LivenessLock

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(user):
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(finding=finding, user=user, plugin="echo", reproduce=False)
    reproduction = services.reproduction_request(experiment=experiment, user=user, seeds=[0])
    return reproduction.runs.get()


ROWS = [("baseline", "risk", 1, 1.0), ("baseline", "skill", 1, 1.0), ("baseline", "width", 1, 3.0),
        ("intervention", "risk", 1, 0.5), ("intervention", "skill", 1, 1.0), ("intervention", "width", 1, 3.0)]


def _succeed(run_id, token):
    return services.run_succeed(
        run_id=run_id, token=token, rows=ROWS, artifacts={}, environment={}, hardware="cpu",
        plugin_version="1.0.0", logs="",
    )


def test_claim_is_exclusive(run):
    first = services.run_claim(run_id=run.pk, worker_host="a")
    assert first is not None
    assert services.run_claim(run_id=run.pk, worker_host="b") is None
    run.refresh_from_db()
    assert run.state == "running" and run.attempts == 1 and run.worker_host == "a"


def test_terminal_states_never_change(run):
    token = services.run_claim(run_id=run.pk, worker_host="a")
    assert _succeed(run.pk, token)
    for state in Run.State.values:
        assert not services.run_transition(run_id=run.pk, to_state=state)
    assert not services.run_fail(run_id=run.pk, token=token, error="late failure")
    assert not _succeed(run.pk, token)  # a repeated result is discarded
    run.refresh_from_db()
    assert run.state == "succeeded"
    assert Measurement.objects.filter(run=run).count() == len(ROWS)


def test_result_from_a_superseded_claim_is_discarded(run):
    stale_token = services.run_claim(run_id=run.pk, worker_host="dead")
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert services.runs_reap()["requeued"] == 1
    fresh_token = services.run_claim(run_id=run.pk, worker_host="alive")
    assert not _succeed(run.pk, stale_token)
    assert _succeed(run.pk, fresh_token)
    run.refresh_from_db()
    assert run.attempts == 2 and run.worker_host == "alive"
    assert Measurement.objects.filter(run=run).count() == len(ROWS)


def test_transition_table_is_complete():
    assert set(services.ALLOWED_TRANSITIONS) == set(Run.State.values)
    for state in TERMINAL_STATES:
        assert services.ALLOWED_TRANSITIONS[state] == frozenset()


def test_reaper_gives_up_after_max_attempts(run):
    services.run_claim(run_id=run.pk, worker_host="a")
    Run.objects.filter(pk=run.pk).update(
        attempts=settings.RUN_MAX_ATTEMPTS, heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    assert services.runs_reap()["failed"] == 1
    run.refresh_from_db()
    assert run.state == "failed" and "worker lost" in run.error
    assert Event.objects.filter(type="run.finished", payload__run=run.pk).exists()


def test_reaper_times_out_a_run_past_its_limit(run):
    services.run_claim(run_id=run.pk, worker_host="a")
    from django.conf import settings

    limit = run.reproduction.experiment.time_limit_s
    margin = settings.RUN_KILL_GRACE_S + settings.RUN_SAVE_RETRY_S + 60  # the worker's own stop comes first
    Run.objects.filter(pk=run.pk).update(started_at=timezone.now() - timedelta(seconds=limit + margin - 5))
    assert services.runs_reap()["timed_out"] == 0
    Run.objects.filter(pk=run.pk).update(started_at=timezone.now() - timedelta(seconds=limit + margin + 1))
    assert services.runs_reap()["timed_out"] == 1
    run.refresh_from_db()
    assert run.state == "timed_out"


def test_results_must_match_the_declaration():
    from tests.fakes.plugins import EchoExperiment

    good = {"baseline": {"risk": 1, "skill": 2, "width": 3}, "intervention": {"risk": 1, "skill": 2, "width": 3}}
    assert len(services.validate_results(EchoExperiment, good)) == 6
    bad_cases = [
        ({"baseline": good["baseline"]}, "no results for arm 'intervention'"),
        ({**good, "extra": good["baseline"]}, "undeclared arms"),
        ({**good, "baseline": {"risk": 1, "skill": 2}}, "no value for ['width']"),
        ({**good, "baseline": {**good["baseline"], "x": 1}}, "undeclared metrics ['x']"),
        ({**good, "baseline": {**good["baseline"], "risk": float("inf")}}, "not finite"),
    ]
    for results, message in bad_cases:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            services.validate_results(EchoExperiment, results)


def test_artifact_names_are_made_safe():
    assert services.safe_artifact_name("../../etc/passwd") == "passwd"
    assert services.safe_artifact_name("a b<script>.png") == "a_b_script_.png"
    assert services.safe_artifact_name("..") == "artifact"


@pytest.mark.django_db(transaction=True)
def test_events_need_a_transaction():
    from registry.events.services import event_emit

    with pytest.raises(RuntimeError):
        event_emit(type="x", payload={})


def test_claim_token_is_required_when_given(run):
    services.run_claim(run_id=run.pk, worker_host="a")
    assert not services.run_transition(run_id=run.pk, to_state="succeeded", token=uuid.uuid4())


def test_redispatch_backs_off_and_skips_queues_nobody_consumes(run, monkeypatch):
    """Without the broker's answer (not Redis, unreachable, a queue too long to scan): the backoff."""
    from registry.reproductions.models import WorkerPresence
    from worker import broker

    monkeypatch.setattr(broker, "run_messages_present", lambda runs, **kwargs: None)
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(created_at=now - timedelta(hours=2), dispatched_at=now - timedelta(hours=1))
    assert services._runs_to_redispatch(now) == []  # no worker consumes 'cpu': re-sending helps nobody
    WorkerPresence.objects.create(hostname="w", queues=["cpu"], last_seen=now)
    assert services._runs_to_redispatch(now) == []  # waited 1 h after a send at age 1 h: not yet
    WorkerPresence.objects.update(last_seen=now + timedelta(minutes=61))
    assert services._runs_to_redispatch(now + timedelta(minutes=61)) == [run.pk]
    Run.objects.filter(pk=run.pk).update(dispatched_at=None)
    WorkerPresence.objects.all().delete()
    assert services._runs_to_redispatch(now) == [run.pk]  # never sent: always sent


def _heartbeat_arrives_just_after_the_reaper_reads(monkeypatch, run_id, token):
    """The worker's heartbeat lands between the reaper's read of the run and its write: the first
    state change the reaper attempts is preceded by a real ``run_heartbeat``."""
    original = services.run_transition
    arrived = []

    def transition(**kwargs):
        if not arrived:
            arrived.append(services.run_heartbeat(run_id=run_id, token=token))
        return original(**kwargs)

    monkeypatch.setattr(services, "run_transition", transition)
    return arrived


@pytest.mark.parametrize("attempts", [1, settings.RUN_MAX_ATTEMPTS])
def test_the_reaper_leaves_a_run_with_a_fresh_heartbeat_alone(run, attempts):
    token = services.run_claim(run_id=run.pk, worker_host="a")
    Run.objects.filter(pk=run.pk).update(attempts=attempts, heartbeat_at=timezone.now())
    counts = services.runs_reap()
    assert counts["requeued"] == counts["failed"] == 0
    run.refresh_from_db()
    assert run.state == "running" and run.claim_token == token and run.error == ""


def test_the_reaper_requeues_then_fails_a_run_whose_heartbeat_stopped(run):
    services.run_claim(run_id=run.pk, worker_host="a")
    stale = timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT_S + 5)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=stale)
    assert services.runs_reap()["requeued"] == 1
    assert Run.objects.get(pk=run.pk).state == "queued"
    Run.objects.filter(pk=run.pk).update(state="running", attempts=settings.RUN_MAX_ATTEMPTS, heartbeat_at=stale)
    assert services.runs_reap()["failed"] == 1
    run.refresh_from_db()
    assert run.state == "failed" and "giving up" in run.error and run.finished_at is not None


def test_the_reaper_does_not_requeue_a_run_whose_heartbeat_just_arrived(run, monkeypatch):
    token = services.run_claim(run_id=run.pk, worker_host="a")
    stale = timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT_S + 5)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=stale)
    arrived = _heartbeat_arrives_just_after_the_reaper_reads(monkeypatch, run.pk, token)
    counts = services.runs_reap()
    assert arrived == ["running"]  # the heartbeat did land in the window
    assert counts["requeued"] == 0
    run.refresh_from_db()
    assert run.state == "running" and run.claim_token == token


def test_the_reaper_does_not_fail_a_run_at_max_attempts_whose_heartbeat_just_arrived(run, monkeypatch):
    token = services.run_claim(run_id=run.pk, worker_host="a")
    stale = timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT_S + 5)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=stale, attempts=settings.RUN_MAX_ATTEMPTS)
    arrived = _heartbeat_arrives_just_after_the_reaper_reads(monkeypatch, run.pk, token)
    counts = services.runs_reap()
    assert arrived == ["running"]
    assert counts["failed"] == 0
    run.refresh_from_db()
    assert run.state == "running" and run.claim_token == token and run.finished_at is None


def test_duplicate_artifact_names_and_nul_text_do_not_fail_a_run(run):
    token = services.run_claim(run_id=run.pk, worker_host="a")
    assert services.run_succeed(
        run_id=run.pk, token=token, rows=ROWS, hardware="cpu", plugin_version="1.0.0", environment={},
        artifacts={"train/sample.png": (b"a", "image/png"), "test/sample.png": (b"b", "image/png")},
        logs="a\x00b",
    )
    assert sorted(Run.objects.get(pk=run.pk).artifacts.values_list("name", flat=True)) == [
        "sample-2.png", "sample.png"]
    assert "\x00" not in Run.objects.get(pk=run.pk).logs


def test_a_huge_number_is_refused_not_crashed():
    from tests.fakes.plugins import EchoExperiment

    ones = {"risk": 1, "skill": 1, "width": 1}
    results = {"baseline": {**ones, "risk": 10**400}, "intervention": ones}
    with pytest.raises(ValueError, match="not a number"):
        services.validate_results(EchoExperiment, results)


# ---------------------------------------------------------------- the reaper after an outage


def _claimed(run, host: str, heartbeat):
    services.run_claim(run_id=run.pk, worker_host=host)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=heartbeat)
    return run


def _second_run(run):
    return Run.objects.create(reproduction=run.reproduction, seed=1, queue=run.queue,
                              dispatched_at=timezone.now())


def test_a_database_outage_does_not_requeue_runs_whose_worker_is_alive(run):
    """The reaper passed at t0; the database was down for 60 s, so no heartbeat was written. The
    first pass after the outage requeues nothing; the live worker's heartbeats resume and its run
    stays; the dead worker's run is requeued within timeout + interval of the resumption."""
    interval, timeout = settings.REAPER_INTERVAL_S, settings.RUN_HEARTBEAT_TIMEOUT_S
    t0 = timezone.now()
    alive = _claimed(run, "alive", t0)
    dead = _claimed(_second_run(run), "dead", t0)
    assert services.runs_reap(now=t0)["requeued"] == 0
    resumed = t0 + timedelta(seconds=60)
    assert services.runs_reap(now=resumed)["requeued"] == 0  # before the fix: both requeued
    assert set(Run.objects.filter(pk__in=[alive.pk, dead.pk]).values_list("state", flat=True)) == {"running"}
    step = 0
    while True:
        step += 1
        now = resumed + timedelta(seconds=interval * step)
        Run.objects.filter(pk=alive.pk).update(heartbeat_at=now - timedelta(seconds=1))  # beats again
        counts = services.runs_reap(now=now)
        if counts["requeued"]:
            break
        assert now - resumed <= timedelta(seconds=timeout)
    assert counts["requeued"] == 1
    assert now - resumed <= timedelta(seconds=timeout + interval)
    assert Run.objects.get(pk=dead.pk).state == "queued"
    assert Run.objects.get(pk=alive.pk).state == "running"


def test_without_a_blind_spell_a_stopped_heartbeat_is_requeued_as_before(run):
    """A worker cut off by the network keeps its database session (and its run's liveness lock)
    until TCP gives up: then only the heartbeat timeout decides."""
    interval, timeout = settings.REAPER_INTERVAL_S, settings.RUN_HEARTBEAT_TIMEOUT_S
    t0 = timezone.now()
    _claimed(run, "cut-off", t0)
    step = 0
    with LivenessLock(run.pk) as lock:
        assert lock.held
        while True:
            now = t0 + timedelta(seconds=interval * step)
            if services.runs_reap(now=now)["requeued"]:
                break
            step += 1
    assert timedelta(seconds=timeout) < now - t0 <= timedelta(seconds=timeout + interval)


def test_a_late_heartbeat_with_a_free_liveness_lock_is_requeued_before_the_timeout(run):
    """The worker process died: its connections closed and released the run's liveness lock, so
    the reaper requeues the run once its heartbeat is RUN_DEAD_AFTER_S late, not after the timeout."""
    dead_after, timeout = settings.RUN_DEAD_AFTER_S, settings.RUN_HEARTBEAT_TIMEOUT_S
    assert 0 < dead_after < timeout
    t0 = timezone.now()
    _claimed(run, "killed", t0)
    lock = LivenessLock(run.pk)
    assert lock.acquire()
    # alive: a late heartbeat alone is not enough while the lock is held
    assert services.runs_reap(now=t0 + timedelta(seconds=dead_after + 1))["requeued"] == 0
    lock.release()  # the worker died
    # a heartbeat younger than RUN_DEAD_AFTER_S is never judged by the lock
    assert services.runs_reap(now=t0 + timedelta(seconds=dead_after - 1))["requeued"] == 0
    counts = services.runs_reap(now=t0 + timedelta(seconds=dead_after + 1))
    assert counts["requeued"] == 1 and counts["dead_by_liveness"] == 1
    run.refresh_from_db()
    assert run.state == "queued" and run.claim_token is None
    assert Event.objects.filter(type="run.requeued", payload__run=run.pk).count() == 1


# ---------------------------------------------------------------- re-sending lost messages


def test_a_run_just_created_is_not_taken_for_lost(run, monkeypatch):
    """Between the commit that creates a run and runs_dispatch stamping dispatched_at, a reaper
    pass must not send it a second time; a requeued run (claimed before) is sent at once."""
    monkeypatch.setattr(services, "runs_dispatch", lambda run_ids, **kwargs: None)
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(created_at=now, dispatched_at=None)
    assert services._runs_to_redispatch(now) == []
    assert services._runs_to_redispatch(now + timedelta(seconds=settings.RUN_DISPATCH_GRACE_S - 1)) == []
    assert services._runs_to_redispatch(now + timedelta(seconds=settings.RUN_DISPATCH_GRACE_S + 1)) == [run.pk]
    Run.objects.filter(pk=run.pk).update(started_at=now)  # requeued: its worker died
    assert services._runs_to_redispatch(now) == [run.pk]


class _FakeRedis:
    """Just what ``run_messages_present`` asks of Redis."""

    def __init__(self, lists):
        self.lists = lists

    def pipeline(self, transaction=False):
        fake, calls = self, []

        class Pipe:
            def llen(self, key):
                calls.append(len(fake.lists.get(key, [])))

            def lrange(self, key, start, end):
                calls.append(list(fake.lists.get(key, [])))

            def zrangebyscore(self, key, low, high):
                calls.append([])

            def execute(self):
                return list(calls)

        return Pipe()

    def hmget(self, key, fields):
        return [None for _ in fields]


def test_a_queue_too_long_to_scan_is_not_flooded_with_re_sends(run, monkeypatch):
    """Before: the scan was refused, the backoff then re-sent every queued run at the front."""
    from registry.reproductions.models import WorkerPresence
    from worker import broker

    now = timezone.now()
    long_ago = now - timedelta(hours=1)
    waiting = [Run.objects.create(reproduction=run.reproduction, seed=10 + i, queue="cpu") for i in range(3)]
    Run.objects.filter(pk__in=[r.pk for r in waiting] + [run.pk]).update(created_at=long_ago - timedelta(minutes=1),
                                                                       dispatched_at=long_ago)
    never_sent = Run.objects.create(reproduction=run.reproduction, seed=20, queue="cpu")
    lost_gpu = Run.objects.create(reproduction=run.reproduction, seed=21, queue="gpu")
    Run.objects.filter(pk__in=[never_sent.pk, lost_gpu.pk]).update(created_at=long_ago)
    Run.objects.filter(pk=lost_gpu.pk).update(dispatched_at=long_ago)
    WorkerPresence.objects.create(hostname="w", queues=["cpu", "gpu"], last_seen=now)
    cpu_key = broker._queue_keys("cpu")[-1]
    messages = [f'{{"id": "run-{r.pk}-abc"}}'.encode() for r in waiting]  # run.pk's own message is not there
    monkeypatch.setattr(broker, "is_redis", lambda: True)
    monkeypatch.setattr(broker, "redis_client", lambda: _FakeRedis({cpu_key: messages}))
    monkeypatch.setattr(broker, "QUEUE_SCAN_LIMIT", 2)
    present = broker.run_messages_present([(r.pk, r.queue) for r in [*waiting, run, lost_gpu]],
                                          delivered_within_s=15)
    assert present == {r.pk for r in waiting} | {run.pk}  # the long queue's runs count as present
    assert sorted(services._runs_to_redispatch(now)) == sorted([never_sent.pk, lost_gpu.pk])
    monkeypatch.setattr(broker, "QUEUE_SCAN_LIMIT", 5000)  # short enough again: scanned
    assert sorted(services._runs_to_redispatch(now)) == sorted([run.pk, never_sent.pk, lost_gpu.pk])
