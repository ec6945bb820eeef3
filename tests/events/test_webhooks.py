"""Matching events to webhook subscriptions, and delivering them to a real local HTTP server."""

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from registry.events import webhooks
from registry.events.models import Delivery, DeliveryCursor, Subscription
from registry.events.services import (
    deliveries_enqueue,
    subscription_create,
    subscription_secret_rotate,
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
    assert {k: body[k] for k in ("id", "type", "finding", "plugin", "payload", "created_at")} == {
        "id": event.pk, "type": "run.finished", "finding": target.pk, "plugin": "sae",
        "payload": {"run": 7, "state": "succeeded"}, "created_at": event.created_at.isoformat(),
    }
    assert body["finding_title"] == target.title  # and links, verdict: tests/events/test_payloads_and_feed.py
    # a receiver written to the Standard Webhooks specification accepts it
    assert secret.startswith("whsec_")
    assert Webhook(secret).verify(request.body, request.headers) == body
    assert "X-Registry-Signature" not in request.headers  # only for secrets made before Standard Webhooks
    assert request.headers["X-Registry-Event"] == "run.finished"
    delivery = Delivery.objects.get(subscription=sub)
    assert request.headers["X-Registry-Delivery"] == str(delivery.pk)
    assert request.headers["webhook-id"] == f"dlv_{delivery.pk}"
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert request.headers["Content-Type"] == "application/json"
    assert request.path == "/hook"
    assert delivery.status == "delivered" and delivery.attempts == 1 and delivery.last_status_code == 200
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None
    # a second sweep sends nothing again
    assert webhooks_sweep()["delivered"] == 0


def test_failing_server_retries_with_backoff_then_fails(user, monkeypatch):
    # full jitter pinned to its ceiling: the schedule's upper bounds, then the 3-day window's end
    monkeypatch.setattr(webhooks, "_jitter", lambda ceiling: ceiling)
    now = timezone.now()
    with webhook_receiver(status=500) as receiver:
        sub = _sub(user, url=receiver.url)
        emit("finding.created", finding(created_by=user))
        webhooks_sweep(now=now)
        Delivery.objects.filter(subscription=sub).update(created_at=now)  # the window starts at the first attempt
        delivery = Delivery.objects.get(subscription=sub)
        assert delivery.status == "pending" and delivery.attempts == 1 and delivery.last_status_code == 500
        delays = []
        previous = now
        while delivery.status == "pending":
            delays.append((delivery.next_attempt_at - previous).total_seconds())
            assert webhooks_sweep(now=delivery.next_attempt_at - timedelta(seconds=1))["delivered"] == 0
            assert Delivery.objects.get(pk=delivery.pk).attempts == delivery.attempts  # not due yet
            previous = delivery.next_attempt_at
            webhooks_sweep(now=previous)
            delivery.refresh_from_db()
        assert len(receiver.requests) == delivery.attempts == 15
    # each retry counts from when the attempt really ended: the sweep's ``now`` plus its few ms
    assert delays == pytest.approx(
        [60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200, 43200, 43200, 43200, 29520], abs=1
    )
    assert previous == now + timedelta(days=3)  # the last attempt is at the window's end
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


def test_sweep_cursor_is_the_commit_ordered_one(user):
    sub = _sub(user)
    event = emit("finding.created", finding(created_by=user))
    now = timezone.now()
    webhooks_sweep(now=now, send=False)
    assert _delivered_to(sub) == {event.pk}
    # a committed event is settled at once: no commit-lag window to wait out, no re-scan
    assert DeliveryCursor.objects.get().last_event_id == event.pk
    webhooks_sweep(now=now + timedelta(minutes=5), send=False)
    assert DeliveryCursor.objects.get().last_event_id == event.pk
    assert Delivery.objects.filter(subscription=sub).count() == 1


# --- Standard Webhooks: verification, tampering, staleness, replay, rotation ---------------------

def _one_delivery(user, receiver, **kwargs):
    sub, secret = subscription_create(owner=user, name="hook", url=receiver.url, **kwargs)
    emit("finding.created", finding(created_by=user))
    webhooks_sweep()
    assert len(receiver.requests) == 1, Delivery.objects.get(subscription=sub).last_error
    return sub, secret, receiver.requests[0]


class ReplayGuard:
    """What a careful receiver does: verify, then refuse a webhook-id it has already accepted."""

    def __init__(self, secret: str) -> None:
        self.webhook, self.seen = Webhook(secret), set()

    def accept(self, body: bytes, headers: dict[str, str]) -> dict:
        payload = self.webhook.verify(body, headers)
        msg_id = {k.lower(): v for k, v in headers.items()}["webhook-id"]
        if msg_id in self.seen:
            raise WebhookVerificationError(f"replayed {msg_id}")
        self.seen.add(msg_id)
        return payload


def test_standard_webhooks_verifier_rejects_tampered_stale_and_replayed(user):
    with webhook_receiver() as receiver:
        _, secret, request = _one_delivery(user, receiver)
    guard = ReplayGuard(secret)
    assert guard.accept(request.body, request.headers)["type"] == "finding.created"
    with pytest.raises(WebhookVerificationError):  # the same delivery captured and sent again
        guard.accept(request.body, request.headers)
    tampered = request.body.replace(b'"finding.created"', b'"finding.deleted"')
    assert tampered != request.body
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, request.headers)
    with pytest.raises(WebhookVerificationError):  # the id is signed: another id does not verify
        Webhook(secret).verify(request.body, {**request.headers, "webhook-id": "dlv_999999"})
    stale = {**request.headers, "webhook-timestamp": str(int(request.headers["webhook-timestamp"]) - 301)}
    with pytest.raises(WebhookVerificationError):  # older than the verifier's 5 minutes
        Webhook(secret).verify(request.body, stale)
    with pytest.raises(WebhookVerificationError):  # and a re-signed stale timestamp too (honest signer)
        old_ts = int(time.time()) - 6 * 60
        msg_id = request.headers["webhook-id"]
        signature = webhooks.webhook_sign(secret, msg_id, old_ts, request.body)
        Webhook(secret).verify(
            request.body, {"webhook-id": msg_id, "webhook-timestamp": str(old_ts), "webhook-signature": signature}
        )
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.webhook_secret_generate()).verify(request.body, request.headers)


def test_signature_matches_the_specification_by_hand(user):
    with webhook_receiver() as receiver:
        _, secret, request = _one_delivery(user, receiver)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    assert len(key) >= 24
    signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == expected


def test_retries_keep_the_webhook_id_and_sign_a_fresh_timestamp(user):
    with webhook_receiver(status=500) as receiver:
        sub, secret = subscription_create(owner=user, name="hook", url=receiver.url)
        emit("finding.created", finding(created_by=user))
        now = timezone.now()
        webhooks_sweep(now=now)
        delivery = Delivery.objects.get(subscription=sub)
        webhooks_sweep(now=delivery.next_attempt_at)
        assert len(receiver.requests) == 2
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"dlv_{delivery.pk}"
    for request in (first, second):
        Webhook(secret).verify(request.body, request.headers)


def test_secrets_made_before_standard_webhooks_keep_verifying(user):
    legacy = "ab" * 32  # what subscriptions held before: token_hex(32), no whsec_ prefix
    with webhook_receiver() as receiver:
        sub = _sub(user, url=receiver.url)
        Subscription.objects.filter(pk=sub.pk).update(secret=legacy)
        emit("finding.created", finding(created_by=user))
        webhooks_sweep()
        request = receiver.requests[0]
    # the reference library given the old secret unchanged (it reads an unprefixed secret as base64)
    Webhook(legacy).verify(request.body, request.headers)
    # and the old header still verifies for receivers written against it
    expected = "sha256=" + hmac.new(legacy.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Registry-Signature"], expected)


def test_rotation_signs_with_both_secrets_during_the_grace_period_only(user, settings):
    settings.WEBHOOKS_SECRET_ROTATION_GRACE_S = 3600
    with webhook_receiver() as receiver:
        sub, old = subscription_create(owner=user, name="hook", url=receiver.url)
        now = timezone.now()
        sub, new = subscription_secret_rotate(subscription=sub, now=now)
        assert new.startswith("whsec_") and new != old
        assert sub.previous_secret_expires_at == now + timedelta(seconds=3600)
        emit("finding.created", finding(created_by=user))
        webhooks_sweep(now=now + timedelta(minutes=59))
        during = receiver.requests[-1]
        emit("finding.updated", finding(created_by=user))
        webhooks_sweep(now=now + timedelta(minutes=61))
        after = receiver.requests[-1]
    assert len(receiver.requests) == 2
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(during.body, during.headers)
    Webhook(old).verify(during.body, during.headers)
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(after.body, after.headers)


def test_rotate_endpoint_owner_only(api, user, other_user, settings):
    from rest_framework.test import APIClient

    settings.WEBHOOKS_SECRET_ROTATION_GRACE_S = 86400
    created = api.post(
        "/api/v1/subscriptions/", {"name": "h", "url": "http://127.0.0.1:9/h"}, format="json"
    ).json()
    url = f"/api/v1/subscriptions/{created['id']}/rotate-secret/"
    anonymous = APIClient()
    assert anonymous.post(url).status_code in (401, 403)
    stranger = APIClient()
    stranger.force_authenticate(other_user)
    assert stranger.post(url).status_code == 404  # the same answer as for an absent subscription
    assert Subscription.objects.get(pk=created["id"]).secret == created["secret"]
    response = api.post(url)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["id"] == created["id"] and body["secret"].startswith("whsec_") and body["secret"] != created["secret"]
    assert body["previous_secret_expires_at"]
    stored = Subscription.objects.get(pk=created["id"])
    assert stored.secret == body["secret"] and stored.previous_secret == created["secret"]
    assert "secret" not in api.get(f"/api/v1/subscriptions/{created['id']}/").json()
    feed = api.post("/api/v1/subscriptions/", {"name": "f", "channel": "feed"}, format="json").json()
    refused = api.post(f"/api/v1/subscriptions/{feed['id']}/rotate-secret/")
    assert refused.status_code == 400 and "channel" in refused.json()["errors"]
