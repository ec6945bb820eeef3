"""Matching events to webhook subscriptions, and delivering them to a real local HTTP server."""

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from registry.events.models import Delivery, DeliveryCursor
from registry.events.services import (
    WEBHOOK_MAX_ATTEMPTS,
    deliveries_enqueue,
    subscription_create,
    subscription_update,
    webhooks_sweep,
)
from tests.events.helpers import emit, finding, webhook_receiver

pytestmark = pytest.mark.django_db


def _sub(owner, **kwargs):
    kwargs.setdefault("url", "http://127.0.0.1:9/never")
    return subscription_create(owner=owner, name="s", **kwargs)[0]


def _delivered_to(subscription) -> set[int]:
    return set(Delivery.objects.filter(subscription=subscription).values_list("event_id", flat=True))


def test_matching_rules(user, other_user):
    sae = finding(created_by=other_user, tags=("sae", "probing"))
    plain = finding(created_by=other_user)
    everything = _sub(user)
    by_finding = _sub(user, finding=sae.pk)
    by_tag = _sub(user, tag="probing")
    by_plugin = _sub(user, plugin="echo")
    only_runs = _sub(user, event_types=["run.finished"])
    feed = subscription_create(owner=user, name="feed", channel="feed", url="")[0]
    inactive = _sub(user)
    subscription_update(subscription=inactive, data={"active": False})

    e1 = emit("finding.created", sae)
    e2 = emit("run.finished", plain, plugin="echo")
    e3 = emit("run.started", sae, plugin="sae")
    e4 = emit("maintenance.note")  # no finding: visible to everyone
    created = deliveries_enqueue([e1.pk, e2.pk, e3.pk, e4.pk])

    assert _delivered_to(everything) == {e1.pk, e2.pk, e3.pk, e4.pk}
    assert _delivered_to(by_finding) == {e1.pk, e3.pk}
    assert _delivered_to(by_tag) == {e1.pk, e3.pk}
    assert _delivered_to(by_plugin) == {e2.pk}
    assert _delivered_to(only_runs) == {e2.pk}
    assert _delivered_to(feed) == set() and _delivered_to(inactive) == set()
    assert created == 4 + 2 + 2 + 1 + 1
    assert deliveries_enqueue([e1.pk, e2.pk, e3.pk, e4.pk]) == 0  # idempotent


def test_events_before_the_subscription_are_not_delivered(user):
    old = emit("finding.created", finding(created_by=user))
    sub = _sub(user)
    new = emit("finding.updated", finding(created_by=user))
    deliveries_enqueue([old.pk, new.pk])
    assert _delivered_to(sub) == {new.pk}


def test_restricted_findings_never_reach_subscribers_who_cannot_see_them(user, other_user, staff_user):
    secret_finding = finding(created_by=other_user, restricted_to=[], tags=("sae",))
    shared = finding(created_by=other_user, restricted_to=[user], tags=("sae",))
    outsider_all = _sub(user)
    outsider_tag = _sub(user, tag="sae")
    author = _sub(other_user, tag="sae")
    staff = _sub(staff_user)
    e_secret = emit("finding.created", secret_finding)
    e_shared = emit("finding.created", shared)
    deliveries_enqueue([e_secret.pk, e_shared.pk])
    assert _delivered_to(outsider_all) == {e_shared.pk}
    assert _delivered_to(outsider_tag) == {e_shared.pk}
    assert _delivered_to(author) == {e_secret.pk, e_shared.pk}
    assert _delivered_to(staff) == {e_secret.pk, e_shared.pk}


def test_visibility_is_checked_again_when_sending(user, other_user):
    shared = finding(created_by=other_user, restricted_to=[user])
    with webhook_receiver() as receiver:
        sub = _sub(user, url=receiver.url)
        emit("finding.updated", shared)
        webhooks_sweep(send=False)
        shared.restricted_to.set([])  # access withdrawn before the delivery went out
        webhooks_sweep()
        assert receiver.requests == []
    delivery = Delivery.objects.get(subscription=sub)
    assert delivery.status == "failed" and "not visible" in delivery.last_error


def test_webhook_delivered_signed_to_a_real_server(user):
    target = finding(created_by=user, tags=("sae",))
    with webhook_receiver() as receiver:
        sub, secret = subscription_create(owner=user, name="hook", url=receiver.url, tag="sae")
        event = emit("run.finished", target, plugin="sae", run=7, state="succeeded")
        result = webhooks_sweep()
        assert result["enqueued"] == 1 and result["delivered"] == 1, result
        assert len(receiver.requests) == 1
        request = receiver.requests[0]
    body = json.loads(request.body)
    assert body == {
        "id": event.pk, "type": "run.finished", "finding": target.pk, "plugin": "sae",
        "payload": {"run": 7, "state": "succeeded"}, "created_at": event.created_at.isoformat(),
    }
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Registry-Signature"], expected)
    assert request.headers["X-Registry-Event"] == "run.finished"
    delivery = Delivery.objects.get(subscription=sub)
    assert request.headers["X-Registry-Delivery"] == str(delivery.pk)
    assert request.headers["Content-Type"] == "application/json"
    assert request.path == "/hook"
    assert delivery.status == "delivered" and delivery.attempts == 1 and delivery.last_status_code == 200
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None
    # a second sweep sends nothing again
    assert webhooks_sweep()["delivered"] == 0


def test_failing_server_retries_with_backoff_then_fails(user):
    now = timezone.now()
    with webhook_receiver(status=500) as receiver:
        sub = _sub(user, url=receiver.url)
        emit("finding.created", finding(created_by=user))
        webhooks_sweep(now=now)
        delivery = Delivery.objects.get(subscription=sub)
        assert delivery.status == "pending" and delivery.attempts == 1 and delivery.last_status_code == 500
        delays = []
        previous = now
        for attempt in range(2, WEBHOOK_MAX_ATTEMPTS + 1):
            delays.append((delivery.next_attempt_at - previous).total_seconds())
            assert webhooks_sweep(now=delivery.next_attempt_at - timedelta(seconds=1))["delivered"] == 0
            assert Delivery.objects.get(pk=delivery.pk).attempts == attempt - 1  # not due yet
            previous = delivery.next_attempt_at
            webhooks_sweep(now=previous)
            delivery.refresh_from_db()
            assert delivery.attempts == attempt
        assert len(receiver.requests) == WEBHOOK_MAX_ATTEMPTS
    assert delays == [30, 60, 120, 240, 480]
    assert delivery.status == "failed" and delivery.next_attempt_at is None
    assert delivery.last_status_code == 500 and "500" in delivery.last_error
    assert webhooks_sweep(now=previous + timedelta(days=1))["failed"] == 0


def test_unreachable_server_is_a_failed_attempt(user):
    with webhook_receiver() as receiver:
        url = receiver.url
    sub = _sub(user, url=url)  # the server is gone: connection refused
    emit("finding.created", finding(created_by=user))
    webhooks_sweep()
    delivery = Delivery.objects.get(subscription=sub)
    assert delivery.status == "pending" and delivery.attempts == 1
    assert delivery.last_status_code is None and delivery.last_error


def test_redirects_are_not_followed(user):
    with webhook_receiver(status=302) as receiver:
        sub = _sub(user, url=receiver.url)
        emit("finding.created", finding(created_by=user))
        webhooks_sweep()
    delivery = Delivery.objects.get(subscription=sub)
    assert delivery.status == "pending" and delivery.last_status_code == 302


def test_sweep_cursor_advances_only_past_settled_events(user):
    sub = _sub(user)
    event = emit("finding.created", finding(created_by=user))
    now = timezone.now()
    webhooks_sweep(now=now, send=False)
    assert _delivered_to(sub) == {event.pk}
    assert DeliveryCursor.objects.get().last_event_id < event.pk  # still inside the commit-lag window
    webhooks_sweep(now=now + timedelta(minutes=5), send=False)
    assert DeliveryCursor.objects.get().last_event_id == event.pk
    assert Delivery.objects.filter(subscription=sub).count() == 1
