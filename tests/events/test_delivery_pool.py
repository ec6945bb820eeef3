"""Issue 8, delivery: concurrent sending through a bounded pool, the lease (no double send between
sweeps, nor between a sweep and a redelivery), the per-attempt delivery log, the owner-only
``subscription.disabled`` event, ``finding.deleted`` to a finding's followers, and no DNS re-check
on a PATCH that keeps the URL."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from registry.errors import ApplicationError
from registry.events import services, webhooks
from registry.events.models import Delivery, DeliveryAttempt, Event, Subscription
from registry.events.services import delivery_redeliver, subscription_create, webhooks_sweep
from tests.events.helpers import emit, finding, webhook_receiver

URL = "/api/v1/subscriptions/"


@dataclass
class SlowReceiver:
    url: str = ""
    delay_s: float = 0.0
    status: int = 200
    body: bytes = b"ok"
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    in_flight: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def slow_receiver(delay_s: float = 0.0, *, status: int = 200, body: bytes = b"ok") -> Iterator[SlowReceiver]:
    """A threaded HTTP server on 127.0.0.1 that waits ``delay_s`` before answering each POST."""
    receiver = SlowReceiver(delay_s=delay_s, status=status, body=body)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's API
            payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.lock:
                receiver.requests.append((self.path, dict(self.headers.items()), payload))
            receiver.in_flight.set()
            time.sleep(receiver.delay_s)
            self.send_response(receiver.status)
            self.send_header("Content-Length", str(len(receiver.body)))
            self.end_headers()
            self.wfile.write(receiver.body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _subscriptions(owner, url: str, n: int) -> list[tuple[Subscription, str]]:
    return [subscription_create(owner=owner, name=f"hook {i}", url=f"{url}/{i}") for i in range(n)]


def _in_thread(target, errors: list[BaseException] | None = None) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            if errors is None:
                raise
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


# --- Concurrency ---------------------------------------------------------------------------------

@pytest.mark.django_db
def test_deliveries_are_sent_concurrently(user, settings):
    settings.WEBHOOKS_SEND_CONCURRENCY = 16
    with slow_receiver(0.5) as receiver:
        subs = _subscriptions(user, receiver.url, 10)
        emit("finding.created", finding(created_by=user))
        started = time.monotonic()
        result = webhooks_sweep()
        elapsed = time.monotonic() - started
    assert result["delivered"] == 10 and len(receiver.requests) == 10
    assert elapsed < 3, f"10 deliveries to a 0.5 s receiver took {elapsed:.1f} s: not concurrent"
    assert sorted(path for path, _, _ in receiver.requests) == sorted(f"/hook/{i}" for i in range(10))
    secrets = {f"/hook/{i}": secret for i, (_, secret) in enumerate(subs)}
    for path, headers, body in receiver.requests:
        Webhook(secrets[path]).verify(body, headers)
    assert set(Delivery.objects.values_list("status", "claimed_until")) == {("delivered", None)}


@pytest.mark.django_db
def test_the_pool_is_bounded(user, settings):
    settings.WEBHOOKS_SEND_CONCURRENCY = 2
    with slow_receiver(0.3) as receiver:
        _subscriptions(user, receiver.url, 4)
        emit("finding.created", finding(created_by=user))
        started = time.monotonic()
        assert webhooks_sweep()["delivered"] == 4
        elapsed = time.monotonic() - started
    assert elapsed >= 0.55  # two rounds of two, not four at once


# --- The lease -----------------------------------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_never_send_a_delivery_twice(user, settings):
    settings.WEBHOOKS_SEND_CONCURRENCY = 4
    with slow_receiver(0.2) as receiver:
        _subscriptions(user, receiver.url, 12)
        emit("finding.created", finding(created_by=user))
        webhooks_sweep(send=False)
        results: list[dict] = []
        errors: list[BaseException] = []
        threads = [_in_thread(lambda: results.append(webhooks_sweep()), errors) for _ in range(2)]
        for thread in threads:
            thread.join(timeout=30)
    assert errors == []
    ids = [headers["webhook-id"] for _, headers, _ in receiver.requests]
    assert len(ids) == len(set(ids)) == 12
    assert sum(r["delivered"] for r in results) == 12
    assert Delivery.objects.filter(status="delivered", attempts=1).count() == 12
    assert DeliveryAttempt.objects.count() == 12


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_sweep_that_outlives_the_lease_setting_is_not_resent_by_a_second_sweep(user, settings, monkeypatch):
    """The lease runs from each claim (and covers a whole attempt), not from the sweep's start:
    a sweep still sending after WEBHOOK_LEASE_S does not hand its later claims to another sweep."""
    settings.WEBHOOKS_SEND_CONCURRENCY = 1
    monkeypatch.setattr(services, "WEBHOOK_LEASE_S", 1)
    with slow_receiver(1.5) as receiver:
        subscription_create(owner=user, name="hook", url=receiver.url)
        for _ in range(2):
            emit("finding.created", finding(created_by=user))
        webhooks_sweep(send=False)
        assert Delivery.objects.filter(status="pending").count() == 2
        results: list[dict] = []
        errors: list[BaseException] = []
        first = _in_thread(lambda: results.append(webhooks_sweep()), errors)
        time.sleep(2.2)  # past the 1 s lease setting, the first sweep is sending its second delivery
        second = _in_thread(lambda: results.append(webhooks_sweep()), errors)
        for thread in (first, second):
            thread.join(timeout=30)
    assert errors == []
    ids = [headers["webhook-id"] for _, headers, _ in receiver.requests]
    assert len(ids) == len(set(ids)) == 2, ids
    assert sum(r["delivered"] for r in results) == 2
    for delivery in Delivery.objects.all():
        numbers = list(DeliveryAttempt.objects.filter(delivery=delivery).values_list("number", flat=True))
        assert delivery.status == "delivered" and delivery.claimed_until is None
        assert delivery.attempts == len(numbers) == len(set(numbers)) == 1


@pytest.mark.django_db
def test_an_attempt_whose_lease_was_taken_over_is_not_recorded(user):
    with slow_receiver() as receiver:
        sub, _ = subscription_create(owner=user, name="hook", url=receiver.url)
        emit("finding.created", finding(created_by=user))
        webhooks_sweep(send=False)
    now = timezone.now()
    ours = now + timezone.timedelta(seconds=30)
    Delivery.objects.filter(subscription=sub).update(claimed_until=ours)
    delivery = Delivery.objects.select_related("subscription", "event").get(subscription=sub)
    # meanwhile another sweep took the row over (our lease had run out) and holds a new lease
    Delivery.objects.filter(pk=delivery.pk).update(claimed_until=ours + timezone.timedelta(seconds=5))
    outcome = webhooks.PostResult(200, "", 12.0, "ok")
    assert webhooks.delivery_attempt_record(delivery, outcome, now=now) is None
    assert DeliveryAttempt.objects.filter(delivery=delivery).count() == 0
    stored = Delivery.objects.get(pk=delivery.pk)
    assert stored.attempts == 0 and stored.status == "pending"
    assert stored.claimed_until == ours + timezone.timedelta(seconds=5)
    # while it is still ours, it is recorded and the lease released
    Delivery.objects.filter(pk=delivery.pk).update(claimed_until=ours)
    recorded = webhooks.delivery_attempt_record(delivery, outcome, now=now)
    assert recorded is not None and recorded.status == "delivered"
    stored = Delivery.objects.get(pk=delivery.pk)
    assert stored.attempts == 1 and stored.claimed_until is None
    assert list(DeliveryAttempt.objects.filter(delivery=delivery).values_list("number", flat=True)) == [1]


def test_the_lease_covers_a_whole_attempt(monkeypatch):
    monkeypatch.setattr(services, "WEBHOOK_LEASE_S", 1)
    assert services.webhook_lease_s() > webhooks.WEBHOOK_TIMEOUT_S


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_redeliver_during_a_sweep_is_refused_and_never_double_sends(user, client_for):
    api = client_for(user)
    with slow_receiver(1.0) as receiver:
        sub, _ = subscription_create(owner=user, name="hook", url=receiver.url)
        emit("finding.created", finding(created_by=user))
        webhooks_sweep(send=False)
        delivery = Delivery.objects.get(subscription=sub)
        sweeping = _in_thread(webhooks_sweep)
        assert receiver.in_flight.wait(10)  # the attempt is under way: the sweep holds the lease
        response = api.post(f"{URL}{sub.pk}/deliveries/{delivery.pk}/redeliver/")
        assert response.status_code == 409, response.json()
        assert "being sent" in response.json()["detail"]
        assert webhooks_sweep()["delivered"] == 0  # a second sweep finds nothing to claim
        sweeping.join(timeout=30)
        assert len(receiver.requests) == 1
        # once recorded, a redelivery is queued and sent exactly once more
        assert api.post(f"{URL}{sub.pk}/deliveries/{delivery.pk}/redeliver/").status_code == 202
        receiver.delay_s = 0
        assert webhooks_sweep()["delivered"] == 1
    assert len(receiver.requests) == 2
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 2 and delivery.claimed_until is None


@pytest.mark.django_db
def test_redeliver_respects_a_held_lease(user):
    with slow_receiver() as receiver:
        sub, _ = subscription_create(owner=user, name="hook", url=receiver.url)
        emit("finding.created", finding(created_by=user))
        webhooks_sweep()
    delivery = Delivery.objects.select_related("subscription").get(subscription=sub)
    now = timezone.now()
    Delivery.objects.filter(pk=delivery.pk).update(claimed_until=now + timezone.timedelta(seconds=30))
    with pytest.raises(ApplicationError) as refused:
        delivery_redeliver(delivery, now=now)
    assert refused.value.status == 409
    assert Delivery.objects.get(pk=delivery.pk).status == "delivered"
    # an expired lease (a sweep that died) does not block it
    delivery_redeliver(delivery, now=now + timezone.timedelta(seconds=31))
    assert Delivery.objects.get(pk=delivery.pk).status == "pending"


# --- The delivery log ----------------------------------------------------------------------------

@pytest.mark.django_db
def test_attempts_are_logged_with_latency_and_a_truncated_body(api, user, other_user, client_for, anon):
    with slow_receiver(0.05, status=500, body=b"\x00\x1b[31mboom\x07 " + b"x" * 5120) as receiver:
        sub = api.post(URL, {"name": "hook", "url": receiver.url}, format="json").json()
        emit("finding.created", finding(created_by=user))
        webhooks_sweep()
        delivery = Delivery.objects.get(subscription_id=sub["id"])
        receiver.status, receiver.body = 200, b"thanks"
        webhooks_sweep(now=delivery.next_attempt_at)
    first, second = DeliveryAttempt.objects.filter(delivery=delivery).order_by("number")
    assert (first.number, first.status_code, second.number, second.status_code) == (1, 500, 2, 200)
    assert first.latency_ms >= 50 and second.latency_ms >= 50
    assert first.response_body.startswith("[31mboom ")  # control characters stripped
    # the first 1,024 bytes of the answer (12 bytes of prefix, 3 of them control characters)
    assert first.response_body == "[31mboom " + "x" * (1024 - 12)
    assert "500" in first.error and second.error == "" and second.response_body == "thanks"

    listing = api.get(f"{URL}{sub['id']}/deliveries/")
    assert listing.status_code == 200
    row = listing.json()["results"][0]
    assert row["status"] == "delivered" and row["last_latency_ms"] == second.latency_ms
    assert [a["number"] for a in row["attempt_log"]] == [1, 2]
    assert set(row["attempt_log"][0]) == {
        "number", "status_code", "latency_ms", "response_body", "error", "attempted_at"
    }
    detail = api.get(f"{URL}{sub['id']}/deliveries/{delivery.pk}/")
    assert detail.status_code == 200 and detail.json()["attempt_log"][0]["response_body"] == first.response_body
    # owner only: a signed-in stranger gets 404, anonymous 401/403, as for every subscription endpoint
    stranger = client_for(other_user)
    for path in (f"{URL}{sub['id']}/deliveries/", f"{URL}{sub['id']}/deliveries/{delivery.pk}/"):
        assert stranger.get(path).status_code == 404
        assert anon.get(path).status_code in (401, 403)
    assert api.get(f"{URL}{sub['id']}/deliveries/{delivery.pk + 1000}/").status_code == 404


@pytest.mark.django_db
def test_post_reports_latency_and_the_start_of_the_answer():
    with slow_receiver(0.02, body="é".encode() * 1000) as receiver:
        outcome = webhooks._post(receiver.url, b"{}", {"Content-Type": "application/json"})
    assert outcome.status_code == 200 and outcome.error == "" and outcome.latency_ms >= 20
    assert len(outcome.body.encode()) <= 1024 + 2 and outcome.body.startswith("é" * 500)
    assert webhooks.response_text(b"a\x00b\nc\td\x7f\x9b") == "ab\nc\td\ufffd"


# --- subscription.disabled reaches the owner alone -----------------------------------------------

@pytest.mark.django_db
def test_subscription_disabled_is_visible_to_the_owner_only(api, user, other_user, client_for, anon, settings):
    settings.WEBHOOKS_DISABLE_AFTER_FAILURES = 1
    settings.WEBHOOKS_DISABLE_AFTER_S = 0
    stranger = client_for(other_user)
    with slow_receiver() as good, webhook_receiver(status=500) as bad:
        failing = api.post(URL, {"name": "flaky hook", "url": bad.url}, format="json").json()
        owners = api.post(URL, {"name": "everything", "url": f"{good.url}/owner"}, format="json").json()
        stranger.post(URL, {"name": "everything", "url": f"{good.url}/stranger"}, format="json")
        emit("finding.created", finding(created_by=user))
        webhooks_sweep()  # the failing hook is disabled: subscription.disabled is written
        assert Subscription.objects.get(pk=failing["id"]).active is False
        event = Event.objects.get(type="subscription.disabled")
        webhooks_sweep()  # matched and delivered in the next sweep
    payload = event.payload
    assert payload["subscription"] == failing["id"] and payload["name"] == "flaky hook"
    assert "consecutive failed delivery attempts" in payload["reason"]
    assert payload["reenable"]["method"] == "PATCH" and payload["reenable"]["body"] == {"active": True}
    assert payload["reenable"]["url"].endswith(f"{URL}{failing['id']}/")
    assert "secret" not in json.dumps(payload) and bad.url not in json.dumps(payload)

    def seen(client) -> bool:
        events = client.get("/api/v1/events/?after=0").json()["events"]
        return any(e["id"] == event.id for e in events)

    assert seen(api) and not seen(stranger) and not seen(anon)
    def atom(who) -> str:  # a plain Django view: signed in with a session
        client = Client()
        if who is not None:
            client.force_login(who)
        return client.get("/api/v1/events/feed.atom").content.decode()

    feed = {"owner": atom(user), "stranger": atom(other_user), "anon": atom(None)}
    assert "flaky hook" in feed["owner"] and f"event:{event.id}<" in feed["owner"]
    assert "flaky hook" not in feed["stranger"] and "flaky hook" not in feed["anon"]
    assert f"event:{event.id}<" not in feed["stranger"] + feed["anon"]
    # webhooks: the owner's catch-all hook gets it, the stranger's does not
    delivered = {path: json.loads(body) for path, _, body in good.requests if json.loads(body)["type"] ==
                 "subscription.disabled"}
    assert list(delivered) == ["/hook/owner"]
    assert delivered["/hook/owner"]["payload"]["subscription"] == failing["id"]
    assert "flaky hook" in delivered["/hook/owner"]["title"]
    assert Delivery.objects.filter(event=event).get().subscription_id == owners["id"]
    # the stream's scan uses the same filter
    from registry.events.cursor import events_after

    assert event.id in [e.id for e in events_after(0, limit=100, visible_to=user)]
    assert event.id not in [e.id for e in events_after(0, limit=100, visible_to=other_user)]
    assert services.event_visible_to(event, user) and not services.event_visible_to(event, other_user)


# --- finding.deleted to a finding's followers ----------------------------------------------------

@pytest.mark.django_db
def test_a_finding_follower_receives_its_finding_deleted(api, user):
    followed = finding(created_by=user, title="Induction heads copy tokens")  # user: its author
    with slow_receiver() as receiver:
        sub = api.post(URL, {"name": "follow", "url": receiver.url, "finding": followed.pk}, format="json").json()
        assert sub["finding"] == followed.pk
        emit("finding.created", finding(created_by=user))  # another finding: not followed
        response = api.delete(f"/api/v1/findings/{followed.pk}/")
        assert response.status_code == 204, response.content
        subscription = Subscription.objects.get(pk=sub["id"])  # survives the deletion
        assert subscription.finding_id is None and subscription.finding_ref == followed.pk
        webhooks_sweep()
        assert len(receiver.requests) == 1
        body = json.loads(receiver.requests[0][2])
    assert body["type"] == "finding.deleted" and body["finding"] == followed.pk
    assert body["finding_title"] == "Induction heads copy tokens" and "Induction heads" in body["title"]
    delivery = Delivery.objects.get(subscription_id=sub["id"])
    assert delivery.status == "delivered" and delivery.attempt_log.count() == 1
    # it keeps the id and stays active, matching nothing new
    assert api.get(f"{URL}{sub['id']}/").json()["finding"] == followed.pk
    emit("finding.created", finding(created_by=user))
    webhooks_sweep()
    assert Delivery.objects.filter(subscription_id=sub["id"]).count() == 1


@pytest.mark.django_db
def test_a_restricted_findings_deletion_reaches_only_followers_who_could_read_it(user, other_user):
    hidden = finding(created_by=user, restricted_to=[user])
    with slow_receiver() as receiver:
        subscription_create(owner=user, name="mine", url=f"{receiver.url}/mine", finding=hidden.pk)
        theirs, _ = subscription_create(owner=other_user, name="theirs", url=f"{receiver.url}/theirs")
        from registry.findings.services import finding_delete

        finding_delete(finding=hidden, user=user)
        webhooks_sweep()
    assert [path for path, _, _ in receiver.requests] == ["/hook/mine"]
    assert not Delivery.objects.filter(subscription=theirs).exists()


# --- PATCH without a URL change does not resolve the URL again -----------------------------------

@pytest.mark.django_db
def test_patch_rechecks_dns_only_when_the_url_changes(api, monkeypatch):
    sub = api.post(URL, {"name": "hook", "url": "https://e.org/hook"}, format="json").json()
    lookups: list[str] = []

    def unresolvable(hostname: str, port: int) -> list[str]:
        lookups.append(hostname)
        raise OSError("no DNS")

    monkeypatch.setattr(webhooks, "_resolve", unresolvable)
    response = api.patch(f"{URL}{sub['id']}/", {"name": "renamed", "event_types": ["finding.created"]},
                         format="json")
    assert response.status_code == 200, response.json()
    assert lookups == [] and response.json()["name"] == "renamed"
    response = api.patch(f"{URL}{sub['id']}/", {"url": "https://e.org/hook"}, format="json")  # same URL
    assert response.status_code == 200 and lookups == []
    response = api.patch(f"{URL}{sub['id']}/", {"url": "https://elsewhere.example/hook"}, format="json")
    assert response.status_code == 400 and "url" in response.json()["errors"] and lookups
