"""Results delivery end to end, with real processes: PostgreSQL, Redis, a real Celery worker running
the reproduction (the fast echo plugin) and the webhook sweep, and a real HTTP receiver that
verifies every delivery with the reference ``standardwebhooks`` library.

Written against the public behaviour only (Delivery.status/attempts, what the receiver got), so it
holds however the sweep sends (sequentially or through a pool) and whatever it logs per attempt."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from registry.events.models import Delivery, Event
from registry.events.services import webhooks_sweep
from registry.reproductions.models import Run
from tests.conftest import wait_for
from tests.events.helpers import Received, Receiver, emit, webhook_receiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis, pytest.mark.worker]

RESULT_TYPES = ["reproduction.requested", "run.started", "run.finished"]


class ReplayGuardedReceiver:
    """What a careful receiver does: verify the signature and the timestamp with the reference
    library, then refuse a ``webhook-id`` it has already accepted."""

    def __init__(self, secret: str):
        self.webhook = Webhook(secret)
        self.seen: set[str] = set()

    def accept(self, body: bytes, headers: dict[str, str]) -> dict:
        event = self.webhook.verify(body, headers)
        msg_id = {k.lower(): v for k, v in headers.items()}["webhook-id"]
        if msg_id in self.seen:
            raise WebhookVerificationError(f"replayed webhook-id {msg_id}")
        self.seen.add(msg_id)
        return event


def _sweep_through_worker(worker) -> None:
    """One ``worker.webhooks_sweep`` on the maintenance queue, waited for in the worker's log (never
    two at once, and none left running when the test database is flushed)."""
    from worker.celery import app

    task_id = app.send_task("worker.webhooks_sweep", queue="maintenance").id
    wait_for(lambda: f"[{task_id}] succeeded" in worker.output() or f"[{task_id}] raised" in worker.output(),
             timeout=60, interval=0.2)
    assert f"[{task_id}] raised" not in worker.output(), worker.output()[-3000:]


def _headers(received: Received) -> dict[str, str]:
    return {k.lower(): v for k, v in received.headers.items()}


def test_results_reach_a_subscribed_webhook_signed_and_verifiable(celery_worker, api, user):
    # a finding, followed by its author through the API
    title = "Echo lowers risk by a quarter"
    finding = api.post("/api/v1/findings/", {"title": title, "kind": "fix"}, format="json").json()
    with webhook_receiver() as receiver:
        created = api.post(
            "/api/v1/subscriptions/",
            {"name": "my results", "channel": "webhook", "url": receiver.url, "finding": finding["id"],
             "event_types": RESULT_TYPES},
            format="json",
        )
        assert created.status_code == 201, created.json()
        subscription, secret = created.json(), created.json()["secret"]
        assert secret.startswith("whsec_")

        # an experiment (no automatic reproduction), then a reproduction requested through the API
        experiment = api.post(
            f"/api/v1/findings/{finding['id']}/experiments/",
            {"plugin": "echo", "params": {"effect": -0.25}, "default_seeds": 2, "reproduce": False},
            format="json",
        )
        assert experiment.status_code == 201, experiment.json()
        requested = api.post(f"/api/v1/experiments/{experiment.json()['id']}/reproductions/", {"seeds": [10, 11]},
                             format="json")
        assert requested.status_code == 202, requested.json()
        reproduction_id = requested.json()["id"]
        wait_for(lambda: not Run.objects.filter(reproduction_id=reproduction_id, state__in=["queued", "running"])
                 .exists(), timeout=90)
        runs = list(Run.objects.filter(reproduction_id=reproduction_id))
        assert sorted(r.state for r in runs) == ["succeeded", "succeeded"], celery_worker.output()[-3000:]
        expected = set(Event.objects.filter(finding_id=finding["id"], type__in=RESULT_TYPES).values_list("id",
                                                                                                         flat=True))
        assert len(expected) == 5  # reproduction.requested, and run.started + run.finished of 2 runs

        # the webhook sweep runs in the real worker until every event is delivered
        def all_delivered() -> bool:
            _sweep_through_worker(celery_worker)
            rows = Delivery.objects.filter(subscription_id=subscription["id"])
            return rows.count() == len(expected) and not rows.exclude(status="delivered").exists()

        wait_for(all_delivered, timeout=120, interval=0.5)
        assert len(receiver.requests) == len(expected), celery_worker.output()[-3000:]

        guard = ReplayGuardedReceiver(secret)
        bodies = {}
        for received in receiver.requests:
            headers = _headers(received)
            event = guard.accept(received.body, headers)  # signature and timestamp verify
            assert event == json.loads(received.body)
            bodies[event["id"]] = (received, event)
            assert headers["webhook-id"] == f"dlv_{Delivery.objects.get(event_id=event['id']).pk}"
            assert headers["x-registry-event"] == event["type"]
            assert received.path == "/hook"
        assert set(bodies) == expected

        # what a receiver needs without a second call: the finding's title and absolute links
        types = Counter(event["type"] for _, event in bodies.values())
        assert types == {"reproduction.requested": 1, "run.started": 2, "run.finished": 2}
        for _, event in bodies.values():
            assert event["finding"] == finding["id"] and event["finding_title"] == title
            assert event["links"]["finding"].startswith("http")
            assert event["links"]["finding"].endswith(f"/api/v1/findings/{finding['id']}/")
            assert f"/findings/{finding['id']}" in event["links"]["finding_page"]
            if event["type"].startswith("run."):
                run_id = event["payload"]["run"]
                assert run_id in {r.pk for r in runs}
                assert event["links"]["run"].endswith(f"/api/v1/runs/{run_id}/")
                assert title in event["title"]
            if event["type"] == "run.finished":
                assert event["measurements"], event

        # forged, stale and replayed deliveries are refused by the same receiver
        received, event = next(v for v in bodies.values() if v[1]["type"] == "run.finished")
        headers = _headers(received)
        tampered = received.body.replace(b'"finding_title":"Echo', b'"finding_title":"Fake')
        assert tampered != received.body
        with pytest.raises(WebhookVerificationError, match="No matching signature"):
            Webhook(secret).verify(tampered, headers)
        stale = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 301)}
        with pytest.raises(WebhookVerificationError, match="too old"):
            Webhook(secret).verify(received.body, stale)
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 43 + "=").verify(received.body, headers)  # another secret
        with pytest.raises(WebhookVerificationError, match="replayed"):
            guard.accept(received.body, headers)  # the very same request, sent again

        # a redelivery of that delivery carries the same webhook-id: the guard refuses it too
        delivery = Delivery.objects.get(event_id=event["id"])
        again = api.post(f"/api/v1/subscriptions/{subscription['id']}/deliveries/{delivery.pk}/redeliver/")
        assert again.status_code == 202, again.json()
        wait_for(lambda: (_sweep_through_worker(celery_worker), len(receiver.requests) > len(expected))[1],
                 timeout=60, interval=0.5)
        redelivered = receiver.requests[-1]
        assert _headers(redelivered)["webhook-id"] == headers["webhook-id"] == f"dlv_{delivery.pk}"
        assert Webhook(secret).verify(redelivered.body, _headers(redelivered))["id"] == event["id"]  # genuine...
        with pytest.raises(WebhookVerificationError, match="replayed"):
            guard.accept(redelivered.body, _headers(redelivered))  # ...but already seen
        delivery.refresh_from_db()
        assert delivery.status == "delivered" and delivery.attempts == 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def _receiver_on(port: int) -> Iterator[Receiver]:
    """A real HTTP receiver on a given port (the one the subscription was pointing at while down)."""
    receiver = Receiver(url=f"http://127.0.0.1:{port}/hook")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's API
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            receiver.requests.append(Received(body=body, headers=dict(self.headers.items()), path=self.path))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_receiver_down_then_back_gets_every_event_exactly_once(api, user):
    from tests.events.helpers import finding as make_finding

    port = _free_port()  # nothing listens here yet
    followed = make_finding(created_by=user, title="Followed while the receiver is down")  # user: its author
    created = api.post(
        "/api/v1/subscriptions/",
        {"name": "flaky receiver", "channel": "webhook", "url": f"http://127.0.0.1:{port}/hook",
         "finding": followed.pk},
        format="json",
    )
    assert created.status_code == 201, created.json()
    subscription_id, secret = created.json()["id"], created.json()["secret"]
    events = [
        emit("run.started", followed, plugin="echo", run=1),
        emit("run.finished", followed, plugin="echo", run=1, state="succeeded"),
        emit("finding.verdict_changed", followed, claim=1, metric="risk", old=None, new="confirmed"),
        emit("finding.status_changed", followed, old="unreproduced", new="reproduced"),
    ]

    # down: every attempt fails and is scheduled for later, nothing is lost
    now = timezone.now()
    for _ in range(2):
        webhooks_sweep(now=now)
        deliveries = list(Delivery.objects.filter(subscription_id=subscription_id))
        assert sorted(d.event_id for d in deliveries) == sorted(e.pk for e in events)
        for d in deliveries:
            assert d.status == "pending" and d.attempts >= 1, (d.status, d.attempts, d.last_error)
            assert d.next_attempt_at is not None and d.next_attempt_at > now
            assert d.delivered_at is None and d.last_error
        now = max(d.next_attempt_at for d in deliveries) + timedelta(seconds=1)
    assert all(d.attempts == 2 for d in Delivery.objects.filter(subscription_id=subscription_id))
    # nothing due yet: a sweep at the real clock leaves the scheduled retries alone
    before = {d.pk: d.attempts for d in Delivery.objects.all()}
    webhooks_sweep(now=timezone.now())
    assert {d.pk: d.attempts for d in Delivery.objects.all()} == before

    # back: sweeps past the scheduled retries deliver everything
    with _receiver_on(port) as receiver:
        for _ in range(10):
            pending = Delivery.objects.filter(subscription_id=subscription_id, status="pending")
            if not pending.exists():
                break
            later = max(d.next_attempt_at for d in pending) + timedelta(seconds=1)
            webhooks_sweep(now=later)
        else:
            pytest.fail("deliveries still pending after 10 sweeps")
        time.sleep(0.2)  # any stray second send would have arrived by now
        requests = list(receiver.requests)
        webhooks_sweep(now=timezone.now() + timedelta(days=4))  # nothing is sent again, even much later
        assert len(receiver.requests) == len(requests)

    deliveries = list(Delivery.objects.filter(subscription_id=subscription_id))
    assert [d.status for d in deliveries] == ["delivered"] * len(events)
    assert all(d.attempts == 3 and d.delivered_at is not None and d.last_status_code == 200 for d in deliveries)
    ids = Counter(_headers(r)["webhook-id"] for r in requests)
    assert ids == Counter({f"dlv_{d.pk}": 1 for d in deliveries})  # every event exactly once
    webhook = Webhook(secret)
    received = [webhook.verify(r.body, _headers(r)) for r in requests]
    assert sorted(e["id"] for e in received) == sorted(e.pk for e in events)
    assert {e["finding_title"] for e in received} == {"Followed while the receiver is down"}
