"""The one recompute task: requested inside the writing transaction, enqueued once on commit,
run by the worker (here: the task's body, or the task applied eagerly), failures visible."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from celery.exceptions import Retry
from django.db import transaction
from django.utils import timezone

from registry.effects import services
from registry.effects.models import ClaimVerdict, FindingEffects
from registry.effects.services import effects_recompute_request, effects_recompute_run, effects_recompute_sweep
from registry.events.models import Event
from registry.findings.models import Claim, Finding
from registry.findings.services import claim_create, claim_update, experiment_retract
from registry.reproductions.services import experiment_create, run_fail
from registry.reproductions.versions import findings_mark_stale
from tests.effects.builders import FLAT, RISK_DOWN, experiment_for, reproduction
from tests.factories import FindingFactory
from worker.tasks import effects_recompute

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch) -> list[tuple]:
    """Messages sent to the broker (recorded instead of sent)."""
    messages: list[tuple] = []

    def send_task(name, args=None, kwargs=None, queue=None, **options):
        messages.append((name, tuple(args or ()), queue))

    monkeypatch.setattr(services.celery_app, "send_task", send_task)
    return messages


@pytest.fixture
def finding(user) -> Finding:
    finding = FindingFactory(created_by=user, kind="fix")  # the creator is an accepted author
    reproduction(experiment_for(finding), {"risk": RISK_DOWN, "skill": FLAT, "width": FLAT})
    return finding


def _pending(finding: Finding) -> bool:
    return FindingEffects.objects.get(finding=finding).pending


# ---------------------------------------------------------------- requests and coalescing


def test_a_claim_created_triggers_a_recompute_that_changes_the_stored_verdict(
    finding, user, sent, django_capture_on_commit_callbacks
):
    first = claim_create(finding=finding, user=user, metric="risk", direction="decrease", min_relative_effect=0.3)
    effects_recompute_run(finding_id=finding.pk)
    assert ClaimVerdict.objects.get(claim=first).verdict == "confirmed"

    # supersede it with a claim the data cannot meet (a 90% fall where risk halves)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        second = claim_create(
            finding=finding, user=user, metric="risk", direction="decrease", min_relative_effect=0.9, supersedes=first
        )
    assert len(callbacks) == 1
    assert sent == [("worker.effects_recompute", (finding.pk,), "maintenance")]
    assert _pending(finding)
    assert not ClaimVerdict.objects.filter(claim=second).exists()  # nothing computed synchronously

    effects_recompute.apply(args=[finding.pk], throw=True)  # what the worker does with the message
    assert not _pending(finding)
    assert ClaimVerdict.objects.get(claim=second).verdict == "refuted"
    data = FindingEffects.objects.get(finding=finding).data
    assert [c["claim"] for c in data["claims"]] == [second.pk]
    assert Event.objects.filter(type="finding.verdict_changed", payload__claim=second.pk).exists()


def test_two_requests_in_one_transaction_enqueue_once(finding, user, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            claim_create(finding=finding, user=user, metric="risk", direction="decrease", min_relative_effect=0.3)
            claim_create(finding=finding, user=user, metric="skill", direction="non_inferior", margin=0.05)
            effects_recompute_request(finding_id=finding.pk)
    assert len(callbacks) == 1
    assert sent == [("worker.effects_recompute", (finding.pk,), "maintenance")]
    # once the task has started (pending cleared), the next change enqueues again
    effects_recompute_run(finding_id=finding.pk)
    with django_capture_on_commit_callbacks(execute=True):
        effects_recompute_request(finding_id=finding.pk)
    assert len(sent) == 2


def test_a_rolled_back_change_sends_nothing(finding, user, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            claim_create(finding=finding, user=user, metric="risk", direction="decrease", min_relative_effect=0.3)
            raise RuntimeError("the writer failed later")
    assert callbacks == [] and sent == []
    assert not Claim.objects.filter(finding=finding).exists()


@pytest.mark.parametrize(
    "change",
    ["claim_create", "claim_update", "experiment_create", "experiment_retract", "run_finished", "stale"],
)
def test_every_change_that_can_move_effects_requests_a_recompute(user, change, monkeypatch):
    finding = FindingFactory(created_by=user, kind="fix")  # the creator is an accepted author
    if change == "claim_update":
        claim = claim_create(finding=finding, user=user, metric="risk", direction="decrease", min_relative_effect=0.3)
    experiment = None
    if change in ("experiment_retract", "run_finished", "stale"):
        experiment = experiment_create(finding=finding, user=user, plugin="echo", reproduce=False)
    FindingEffects.objects.filter(finding=finding).update(pending=False)
    if change == "claim_create":
        claim_create(finding=finding, user=user, metric="risk", direction="decrease", min_relative_effect=0.3)
    elif change == "claim_update":
        claim_update(claim=claim, user=user, data={"min_relative_effect": 0.5})
    elif change == "experiment_create":
        experiment_create(finding=finding, user=user, plugin="echo", reproduce=False)
    elif change == "experiment_retract":
        experiment_retract(experiment=experiment, user=user, reason="smoke test, wrong parameters")
    elif change == "run_finished":
        repro = reproduction(experiment, {"risk": RISK_DOWN[:1]})
        run = repro.runs.get()
        run.state = "running"
        run.save(update_fields=["state"])
        assert run_fail(run_id=run.pk, token=None, error="lost")
    elif change == "stale":
        reproduction(experiment, {"risk": RISK_DOWN[:1]})  # results of plugin version "" (not the installed one)
        monkeypatch.setattr("registry.reproductions.versions.installed_versions", lambda: {"echo": "9.0.0"})
        assert findings_mark_stale() == [finding.pk]
    assert _pending(finding)


def test_a_second_plugin_upgrade_of_a_stale_finding_still_recomputes(user):
    finding = FindingFactory(created_by=user)
    experiment = experiment_for(finding)
    reproduction(experiment, {"risk": RISK_DOWN[:3]})  # plugin version "": stale against the installed 1.0.0
    assert findings_mark_stale() == [finding.pk]
    effects_recompute_run(finding_id=finding.pk)
    assert not _pending(finding)
    assert FindingEffects.objects.get(finding=finding).data["plugin_versions"] == {"echo": "1.0.0"}
    # already stale; the installed version the effects were computed with changes again
    FindingEffects.objects.filter(finding=finding).update(
        data={**FindingEffects.objects.get(finding=finding).data, "plugin_versions": {"echo": "0.9.0"}}
    )
    assert findings_mark_stale() == []  # no new stale event
    assert _pending(finding)
    effects_recompute_run(finding_id=finding.pk)
    assert findings_mark_stale() == [] and not _pending(finding)  # nothing changed since: no request


# ---------------------------------------------------------------- failures


def test_a_failing_recompute_is_logged_stored_announced_and_raised(finding, user, monkeypatch, caplog):
    claim_create(finding=finding, user=user, metric="risk", direction="decrease", min_relative_effect=0.3)

    def broken(*, finding_id):
        raise ValueError("statistics exploded")

    MESSAGE = "ValueError while recomputing the effects (details in the worker log)"

    monkeypatch.setattr(services, "finding_effects_recompute", broken)
    with caplog.at_level(logging.ERROR, logger="registry.effects.services"), pytest.raises(ValueError):
        effects_recompute_run(finding_id=finding.pk)
    record = next(r for r in caplog.records if "effects recompute failed" in r.getMessage())
    assert str(finding.pk) in record.getMessage() and record.exc_info
    row = FindingEffects.objects.get(finding=finding)
    # the request stays pending (the sweep tries again); readers see the kind of failure, not
    # the exception text, which stays in the log
    assert row.error == MESSAGE and row.pending
    assert "statistics exploded" in record.exc_text or "statistics exploded" in str(record.exc_info[1])
    event = Event.objects.get(type="finding.effects_failed", finding_id=finding.pk)
    assert event.payload == {"finding": finding.pk, "error": MESSAGE}

    # the task does not swallow it either: it raises for Celery to retry (then to record the failure)
    with pytest.raises((ValueError, Retry)):
        effects_recompute.apply(args=[finding.pk], throw=True)
    assert Event.objects.filter(type="finding.effects_failed", finding_id=finding.pk).count() >= 2

    # the read side shows it
    from registry.effects.selectors import finding_effects_get

    assert finding_effects_get(finding=finding, user=None)["error"] == MESSAGE

    # a later success clears it
    monkeypatch.undo()
    effects_recompute_run(finding_id=finding.pk)
    assert FindingEffects.objects.get(finding=finding).error == ""
    assert finding_effects_get(finding=finding, user=None)["error"] is None


# ---------------------------------------------------------------- the sweep (lost messages)


def test_the_sweep_resends_recomputes_pending_for_too_long(user, sent):
    old, recent, done = (FindingFactory(created_by=user) for _ in range(3))
    now = timezone.now()
    FindingEffects.objects.create(finding=old, pending=True, requested_at=now - timedelta(minutes=30))
    FindingEffects.objects.create(finding=recent, pending=True, requested_at=now - timedelta(seconds=30))
    FindingEffects.objects.create(finding=done, pending=False, requested_at=now - timedelta(minutes=30))
    assert effects_recompute_sweep(now=now) == [old.pk]
    assert sent == [("worker.effects_recompute", (old.pk,), "maintenance")]
    assert FindingEffects.objects.get(finding=old).requested_at == now
    assert effects_recompute_sweep(now=now + timedelta(minutes=1)) == []  # not again at once


def test_the_task_and_the_sweep_are_routed_to_the_maintenance_queue():
    from worker.celery import app

    routes = app.conf.task_routes
    assert routes["worker.effects_recompute"] == {"queue": "maintenance"}
    assert routes["worker.effects_sweep"] == {"queue": "maintenance"}
    assert effects_recompute.max_retries and effects_recompute.max_retries <= 5


# ---------------------------------------------------------------- through a real worker


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.worker
def test_runs_finishing_in_the_worker_get_their_effects_recomputed(celery_worker, api):
    from tests.conftest import wait_for

    finding = api.post("/api/v1/findings/", {"title": "Echo", "kind": "fix"}, format="json").json()
    claim = api.post(
        f"/api/v1/findings/{finding['id']}/claims/",
        {"metric": "risk", "direction": "decrease", "min_relative_effect": 0.3},
        format="json",
    ).json()
    response = api.post(
        f"/api/v1/findings/{finding['id']}/experiments/",
        {"plugin": "echo", "params": {"effect": -0.5, "noise": 0.05}, "default_seeds": 3},
        format="json",
    )
    assert response.status_code == 201, response.json()

    def recomputed() -> bool:
        body = api.get(f"/api/v1/findings/{finding['id']}/effects/").json()
        return not body["pending"] and body.get("n_runs") == 3

    wait_for(recomputed, timeout=90)
    body = api.get(f"/api/v1/findings/{finding['id']}/effects/").json()
    assert body["computed_at"] and body["error"] is None, celery_worker.output()[-3000:]
    assert [c["claim"] for c in body["claims"]] == [claim["id"]]
    assert ClaimVerdict.objects.filter(claim_id=claim["id"]).exists()
    assert "worker.effects_recompute" in celery_worker.output()


def test_a_crash_mid_recompute_leaves_the_request_pending_for_the_sweep(user, monkeypatch, sent):
    finding = FindingFactory(created_by=user)
    claim_create(finding=finding, user=user, metric="risk", direction="decrease", min_relative_effect=0.3)
    assert FindingEffects.objects.get(finding=finding).pending

    def killed(*, finding_id):
        raise KeyboardInterrupt  # stands in for a SIGKILL between the start and the commit

    monkeypatch.setattr(services, "finding_effects_recompute", killed)
    with pytest.raises(KeyboardInterrupt):
        effects_recompute_run(finding_id=finding.pk)
    row = FindingEffects.objects.get(finding=finding)
    assert row.pending and row.error == ""  # rolled back: still requested
    FindingEffects.objects.filter(pk=row.pk).update(requested_at=timezone.now() - timedelta(minutes=10))
    assert effects_recompute_sweep() == [finding.pk]


def test_a_duplicate_message_does_not_recompute_twice(user, monkeypatch):
    finding = FindingFactory(created_by=user)
    claim_create(finding=finding, user=user, metric="risk", direction="decrease", min_relative_effect=0.3)
    calls = []
    real = services.finding_effects_recompute
    monkeypatch.setattr(services, "finding_effects_recompute", lambda **kw: calls.append(kw) or real(**kw))
    effects_recompute_run(finding_id=finding.pk)
    effects_recompute_run(finding_id=finding.pk)
    assert len(calls) == 1 and not FindingEffects.objects.get(finding=finding).pending


def test_the_sweep_is_bounded_and_oldest_first(user, sent):
    old = timezone.now() - timedelta(minutes=30)
    findings = [FindingFactory(created_by=user) for _ in range(3)]
    for age, finding in enumerate(findings):
        FindingEffects.objects.create(finding=finding, pending=True, requested_at=old - timedelta(minutes=age))
    assert effects_recompute_sweep(limit=2) == [findings[2].pk, findings[1].pk]


# ---------------------------------------------------------------- writers never wait for a recompute


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_write_during_a_recompute_neither_waits_for_it_nor_is_lost(monkeypatch, settings):
    """The recompute holds no lock a writer takes while it computes: a run recorded meanwhile
    commits at once, and the recompute, finding the request sequence moved, leaves the request
    pending and enqueues itself again, EFFECTS_RECOMPUTE_BUSY_DELAY_S later; the next recompute
    counts the run."""
    import threading
    import time

    from django.db import connection

    from registry.reproductions.self_reported import self_reported_run_record
    from tests.effects.builders import echo_params
    from tests.factories import UserFactory

    user = UserFactory()
    finding = FindingFactory(created_by=user, kind="fix")
    experiment = experiment_for(finding)
    settings.EFFECTS_RECOMPUTE_BUSY_DELAY_S = 1.5
    enqueued: list[int] = []
    countdowns: list[float] = []

    def enqueue(finding_id: int, *, countdown: float = 0.0) -> None:
        enqueued.append(finding_id)
        countdowns.append(countdown)

    monkeypatch.setattr(services, "effects_recompute_enqueue", enqueue)
    with transaction.atomic():
        effects_recompute_request(finding_id=finding.pk)
    assert enqueued == [finding.pk] and countdowns == [0.0]  # the first request: at once
    computing, release = threading.Event(), threading.Event()
    real = services.effects_data

    def slow(finding_, claims):
        data = real(finding_, claims)
        computing.set()
        release.wait(20)
        return data

    monkeypatch.setattr(services, "effects_data", slow)
    outcome: list = []

    def recompute():
        try:
            outcome.append(effects_recompute_run(finding_id=finding.pk))
        finally:
            connection.close()

    thread = threading.Thread(target=recompute)
    thread.start()
    try:
        assert computing.wait(20)
        started = time.monotonic()
        arm = {"risk": 1.0, "skill": 1.0, "width": 3.0}
        self_reported_run_record(
            experiment=experiment, user=user, seed=1, params=echo_params(), hardware="cpu",
            measurements={"baseline": arm, "intervention": {**arm, "risk": 0.5}},
        )
        waited = time.monotonic() - started
    finally:
        release.set()
        thread.join(30)
    assert waited < 5, f"the write waited {waited:.1f} s for the recompute"
    assert outcome and outcome[0]["n_runs"] == 0  # computed before the run existed
    row = FindingEffects.objects.get(finding=finding)
    assert row.pending and row.data["n_runs"] == 0
    assert enqueued == [finding.pk, finding.pk]  # the recompute asked for another one,
    assert countdowns == [0.0, 1.5]  # a little later: more writes may be on their way
    assert effects_recompute_run(finding_id=finding.pk)["n_runs"] == 1
    row = FindingEffects.objects.get(finding=finding)
    assert not row.pending and row.data["n_runs"] == 1


def test_a_busy_finding_is_recomputed_again_later_and_the_sweep_leaves_that_chain_alone(
    user, monkeypatch, settings, django_capture_on_commit_callbacks
):
    """Changes committed during a recompute: the next one is sent EFFECTS_RECOMPUTE_BUSY_DELAY_S
    later, and the request's time moves on, so a finding busy for longer than the sweep's interval
    is not sent a second message (which would start a second chain of recomputes)."""
    from django.db.models import F

    settings.EFFECTS_RECOMPUTE_BUSY_DELAY_S = 2.0
    finding = FindingFactory(created_by=user, kind="fix")
    long_ago = timezone.now() - timedelta(minutes=30)
    FindingEffects.objects.create(finding=finding, pending=True, requested_at=long_ago, requested_seq=5)
    real = services.finding_effects_recompute

    def a_write_lands_meanwhile(*, finding_id):
        data = real(finding_id=finding_id)
        FindingEffects.objects.filter(finding_id=finding_id).update(requested_seq=F("requested_seq") + 1)
        return data

    monkeypatch.setattr(services, "finding_effects_recompute", a_write_lands_meanwhile)
    messages: list[tuple] = []
    monkeypatch.setattr(services.celery_app, "send_task",
                        lambda name, args=None, queue=None, **options: messages.append((args, options)))
    with django_capture_on_commit_callbacks(execute=True):
        effects_recompute_run(finding_id=finding.pk)
    assert messages == [([finding.pk], {"countdown": 2.0})]
    row = FindingEffects.objects.get(finding=finding)
    assert row.pending and row.requested_at > long_ago + timedelta(minutes=29)
    assert effects_recompute_sweep() == []  # its chain is alive: no second message
    assert len(messages) == 1


@pytest.mark.parametrize(("setting", "delay"), [(2.0, 2.0), (0, 0.0), (-5, 0.0), (1e9, 60.0),
                                                 (float("inf"), 0.0), (float("nan"), 0.0), ("soon", 0.0)])
def test_the_busy_delay_is_bounded(settings, setting, delay):
    settings.EFFECTS_RECOMPUTE_BUSY_DELAY_S = setting
    assert services.busy_delay_s() == delay
