"""Webhook operations: retries with jittered back-off over 3 days, automatic disabling and
re-enabling, manual redelivery and the test ping, against a real local receiver."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from registry.events import webhooks
from registry.events.models import Delivery, Event, Subscription
from registry.events.services import delivery_send, webhooks_sweep
from tests.events.helpers import emit, finding, webhook_receiver

pytestmark = pytest.mark.django_db

URL = "/api/v1/subscriptions/"


def _create(api, url: str, **extra) -> dict:
    response = api.post(URL, {"name": "hook", "url": url, **extra}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def _delivered_once(api, user, receiver) -> tuple[dict, Delivery]:
    sub = _create(api, receiver.url)
    emit("finding.created", finding(created_by=user))
    webhooks_sweep()
    return sub, Delivery.objects.get(subscription_id=sub["id"])


# --- Retries -------------------------------------------------------------------------------------

def test_retries_use_full_jitter_within_the_schedule_and_stop_after_three_days(api, user, settings):
    settings.WEBHOOKS_DISABLE_AFTER_FAILURES = 1000  # this test is about one delivery's window alone
    now = timezone.now()
    with webhook_receiver(status=503) as receiver:
        sub = _create(api, receiver.url)
        emit("finding.created", finding(created_by=user))
        webhooks_sweep(now=now)
        Delivery.objects.filter(subscription_id=sub["id"]).update(created_at=now)
        delivery = Delivery.objects.get(subscription_id=sub["id"])
        deadline = now + timedelta(seconds=webhooks.WEBHOOK_RETRY_WINDOW_S)
        previous, delays = now, []
        while delivery.status == "pending":
            assert previous < delivery.next_attempt_at <= deadline
            delays.append((delivery.next_attempt_at - previous).total_seconds())
            previous = delivery.next_attempt_at
            webhooks_sweep(now=previous)
            delivery.refresh_from_db()
        assert len(receiver.requests) == delivery.attempts == len(delays) + 1
    schedule = webhooks.WEBHOOK_RETRY_SCHEDULE_S
    for retry, delay in enumerate(delays[:-1], start=1):  # the last one may be cut to the window's end
        assert 0 <= delay <= schedule[min(retry, len(schedule)) - 1]
    assert len(set(delays)) > 1  # jittered, not a fixed ladder
    assert delivery.status == "failed" and delivery.next_attempt_at is None
    assert previous == deadline or delivery.attempts == webhooks.WEBHOOK_MAX_ATTEMPTS
    # the same webhook-id on every attempt
    assert {r.headers["webhook-id"] for r in receiver.requests} == {f"dlv_{delivery.pk}"}


def test_a_receiver_back_within_the_window_gets_the_delivery(api, user):
    now = timezone.now()
    with webhook_receiver(status=500) as receiver:
        sub = _create(api, receiver.url)
        emit("finding.created", finding(created_by=user))
        webhooks_sweep(now=now)
        delivery = Delivery.objects.get(subscription_id=sub["id"])
        for _ in range(3):
            webhooks_sweep(now=delivery.next_attempt_at)
            delivery.refresh_from_db()
        receiver.status = 200
        webhooks_sweep(now=delivery.next_attempt_at)
        delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 5 and delivery.last_status_code == 200
    assert Subscription.objects.get(pk=sub["id"]).consecutive_failures == 0


# --- Automatic disabling -------------------------------------------------------------------------

def test_consecutive_failures_over_the_minimum_period_disable_the_subscription(api, user, settings):
    settings.WEBHOOKS_DISABLE_AFTER_FAILURES = 3
    settings.WEBHOOKS_DISABLE_AFTER_S = 3600
    t0 = timezone.now()
    with webhook_receiver(status=500) as receiver:
        sub = _create(api, receiver.url)
        for _ in range(2):
            emit("finding.created", finding(created_by=user))
        webhooks_sweep(now=t0, send=False)
        first, second = Delivery.objects.filter(subscription_id=sub["id"]).order_by("id")
        for delivery, at in ((first, t0), (second, t0 + timedelta(minutes=1)), (first, t0 + timedelta(minutes=2))):
            delivery_send(Delivery.objects.select_related("subscription", "event").get(pk=delivery.pk), now=at)
        subscription = Subscription.objects.get(pk=sub["id"])
        assert subscription.active and subscription.consecutive_failures == 3  # 3 failures, but within 2 min
        assert subscription.failing_since == t0 and subscription.disabled_reason == ""
        delivery_send(Delivery.objects.select_related("subscription", "event").get(pk=second.pk),
                      now=t0 + timedelta(hours=2))
        assert len(receiver.requests) == 4
    subscription.refresh_from_db()
    assert subscription.active is False and subscription.consecutive_failures == 4
    assert subscription.disabled_at == t0 + timedelta(hours=2)
    assert "4 consecutive failed delivery attempts" in subscription.disabled_reason
    # the owner sees why; the subscription.disabled event is addressed to the owner alone
    disabled = Event.objects.get(type="subscription.disabled")
    assert disabled.audience_public is False and list(disabled.audience.all()) == [user]
    assert disabled.payload["subscription"] == sub["id"] and "secret" not in json.dumps(disabled.payload)
    body = api.get(f"{URL}{sub['id']}/").json()
    assert body["active"] is False and body["disabled_reason"] == subscription.disabled_reason
    assert body["disabled_at"] is not None
    # a disabled subscription gets no new deliveries; its pending ones fail without a request
    emit("finding.created", finding(created_by=user))
    webhooks_sweep(now=t0 + timedelta(days=1))
    assert Delivery.objects.filter(subscription_id=sub["id"]).count() == 2
    assert set(Delivery.objects.filter(subscription_id=sub["id"]).values_list("status", flat=True)) == {"failed"}

    response = api.patch(f"{URL}{sub['id']}/", {"active": True}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["active"] is True
    assert response.json()["disabled_reason"] == "" and response.json()["disabled_at"] is None
    subscription.refresh_from_db()
    assert subscription.consecutive_failures == 0 and subscription.failing_since is None


def test_a_success_resets_the_failure_count(api, user, settings):
    settings.WEBHOOKS_DISABLE_AFTER_FAILURES = 2
    settings.WEBHOOKS_DISABLE_AFTER_S = 0
    with webhook_receiver(status=500) as receiver:
        sub = _create(api, receiver.url)
        emit("finding.created", finding(created_by=user))
        emit("finding.created", finding(created_by=user))
        webhooks_sweep(send=False)
        first, second = Delivery.objects.filter(subscription_id=sub["id"]).order_by("id")
        delivery_send(Delivery.objects.select_related("subscription", "event").get(pk=first.pk))
        assert Subscription.objects.get(pk=sub["id"]).consecutive_failures == 1
        receiver.status = 200
        delivery_send(Delivery.objects.select_related("subscription", "event").get(pk=second.pk))
        receiver.status = 500
        delivery_send(Delivery.objects.select_related("subscription", "event").get(pk=first.pk))
    subscription = Subscription.objects.get(pk=sub["id"])
    assert subscription.active and subscription.consecutive_failures == 1  # 1, not 2: the success reset it


# --- Manual redelivery ---------------------------------------------------------------------------

def test_owner_redelivers_with_the_same_webhook_id(api, user):
    with webhook_receiver() as receiver:
        sub, delivery = _delivered_once(api, user, receiver)
        assert delivery.status == "delivered" and len(receiver.requests) == 1
        response = api.post(f"{URL}{sub['id']}/deliveries/{delivery.pk}/redeliver/")
        assert response.status_code == 202, response.json()
        body = response.json()
        assert body["id"] == delivery.pk and body["status"] == "pending" and body["attempts"] == 1
        assert body["event"] == delivery.event_id and body["next_attempt_at"] is not None
        assert body["delivered_at"] is None
        assert webhooks_sweep()["delivered"] == 1
        assert len(receiver.requests) == 2
        first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"dlv_{delivery.pk}"
    assert first.body == second.body
    Webhook(sub["secret"]).verify(second.body, second.headers)
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 2


def test_redelivering_a_failed_delivery(api, user):
    with webhook_receiver(status=500) as receiver:
        sub, delivery = _delivered_once(api, user, receiver)
        Delivery.objects.filter(pk=delivery.pk).update(status="failed", next_attempt_at=None)
        receiver.status = 200
        response = api.post(f"{URL}{sub['id']}/deliveries/{delivery.pk}/redeliver/")
        assert response.status_code == 202 and response.json()["status"] == "pending"
        webhooks_sweep()
        assert len(receiver.requests) == 2
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.last_status_code == 200


def test_redeliver_is_owner_only_and_hides_other_deliveries(api, user, other_user, client_for, anon):
    with webhook_receiver() as receiver:
        sub, delivery = _delivered_once(api, user, receiver)
        path = f"{URL}{sub['id']}/deliveries/{delivery.pk}/redeliver/"
        stranger = client_for(other_user)
        response = stranger.post(path)
        assert response.status_code == 404 and response.json()["detail"]
        response = anon.post(path)
        assert response.status_code in (401, 403) and response.json()["detail"]
        # another of the owner's subscriptions: the delivery is not one of its own
        other_sub = _create(api, receiver.url)
        assert api.post(f"{URL}{other_sub['id']}/deliveries/{delivery.pk}/redeliver/").status_code == 404
        missing = api.post(f"{URL}{sub['id']}/deliveries/{delivery.pk + 1000}/redeliver/")
        assert missing.status_code == 404 and missing.json() == stranger.post(path).json()
        # the stranger's own subscription cannot reach the owner's delivery either
        theirs = _create(stranger, receiver.url)
        assert stranger.post(f"{URL}{theirs['id']}/deliveries/{delivery.pk}/redeliver/").status_code == 404
    assert Delivery.objects.get(pk=delivery.pk).status == "delivered"  # nothing was queued


def test_redeliver_on_an_inactive_subscription_is_refused(api, user):
    with webhook_receiver() as receiver:
        sub, delivery = _delivered_once(api, user, receiver)
    api.patch(f"{URL}{sub['id']}/", {"active": False}, format="json")
    response = api.post(f"{URL}{sub['id']}/deliveries/{delivery.pk}/redeliver/")
    assert response.status_code == 409
    body = response.json()
    assert "re-enable" in body["detail"] and list(body["errors"]) == ["active"]
    assert Delivery.objects.get(pk=delivery.pk).status == "delivered"


# --- Test ping -----------------------------------------------------------------------------------

def test_ping_sends_a_signed_ping_now(api, user):
    with webhook_receiver() as receiver:
        sub = _create(api, receiver.url)
        response = api.post(f"{URL}{sub['id']}/ping/")
        assert response.status_code == 200, response.json()
        assert len(receiver.requests) == 1
        request = receiver.requests[0]
    body = response.json()
    assert set(body) == {"webhook_id", "status", "status_code", "latency_ms", "error"}
    assert body["status"] == "delivered" and body["status_code"] == 200 and body["error"] == ""
    assert 0 <= body["latency_ms"] < 10_000
    assert request.headers["webhook-id"] == body["webhook_id"] and body["webhook_id"].startswith("ping_")
    payload = Webhook(sub["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "ping" and payload["subscription"] == sub["id"]
    assert json.loads(request.body)["type"] == "ping"
    assert request.headers["X-Registry-Event"] == "ping"
    assert not Delivery.objects.filter(subscription_id=sub["id"]).exists()  # not a logged delivery


def test_ping_reports_a_failing_endpoint(api, user):
    with webhook_receiver(status=500) as receiver:
        sub = _create(api, receiver.url)
        response = api.post(f"{URL}{sub['id']}/ping/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "failed" and body["status_code"] == 500 and "500" in body["error"]
    assert Subscription.objects.get(pk=sub["id"]).consecutive_failures == 0  # pings do not count
    with webhook_receiver() as gone:
        url = gone.url
    down = _create(api, url)
    body = api.post(f"{URL}{down['id']}/ping/").json()
    assert body["status"] == "failed" and body["status_code"] is None and body["error"]


def test_ping_is_owner_only_and_webhook_only(api, user, other_user, client_for, anon):
    with webhook_receiver() as receiver:
        sub = _create(api, receiver.url)
        response = client_for(other_user).post(f"{URL}{sub['id']}/ping/")
        assert response.status_code == 404 and response.json()["detail"]
        response = anon.post(f"{URL}{sub['id']}/ping/")
        assert response.status_code in (401, 403) and response.json()["detail"]
        assert receiver.requests == []
    feed = api.post(URL, {"name": "feed", "channel": "feed"}, format="json").json()
    response = api.post(f"{URL}{feed['id']}/ping/")
    assert response.status_code == 400 and "channel" in response.json()["errors"]
