"""Writing to the event log. Call inside the transaction of the change being described."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone

from registry.errors import ApplicationError
from registry.events.models import Delivery, DeliveryCursor, Event, Subscription


def event_emit(*, type: str, finding_id: int | None = None, plugin: str = "", payload: dict[str, Any]) -> Event:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("events must be written in the transaction of the change they describe")
    return Event.objects.create(type=type, finding_id=finding_id, plugin=plugin, payload=payload)


# --- Subscriptions -------------------------------------------------------------------------------

EVENT_TYPES: tuple[str, ...] = (
    "finding.created",
    "finding.updated",
    "finding.deleted",
    "claim.created",
    "claim.updated",
    "experiment.created",
    "experiment.retracted",
    "reproduction.requested",
    "run.started",
    "run.finished",
    "run.requeued",
    "finding.verdict_changed",
    "finding.status_changed",
    "finding.stale",
    "finding.effects_failed",
)

_UNSET = object()


def _webhook_url_check(url: str) -> str:
    url = (url or "").strip()
    if not url:
        raise ApplicationError("a webhook subscription needs a url", field="url")
    if len(url) > 2000 or any(c.isspace() or ord(c) < 32 for c in url):
        raise ApplicationError("url must be an http(s) URL of at most 2000 characters", field="url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApplicationError("url must be an http(s) URL", field="url")
    if not settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES and _is_private_host(parts.hostname):
        raise ApplicationError(
            "url must point to a public address (this registry refuses loopback, private and link-local "
            "addresses; WEBHOOKS_ALLOW_PRIVATE_ADDRESSES changes that)",
            field="url",
        )
    return url


def _is_private_host(hostname: str) -> bool:
    """Whether any address the name resolves to is loopback, private, link-local or reserved (a
    webhook must not be a way to reach the registry's own network)."""
    import ipaddress
    import socket

    try:
        infos = socket.getaddrinfo(hostname, None)
    except OSError:
        return False  # unresolvable now: delivery will fail and be retried, and is checked again then
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not address.is_global or address.is_multicast:
            return True
    return False


def _subscription_check(subscription: Subscription, *, owner: Any) -> None:
    """Validate the whole (merged) subscription; raises ApplicationError naming the field."""
    if not (subscription.name or "").strip():
        raise ApplicationError("name is required", field="name")
    chosen = [f for f in ("finding", "tag", "plugin") if getattr(subscription, f if f != "finding" else "finding_id")]
    if len(chosen) > 1:
        raise ApplicationError(
            f"a subscription follows one of finding, tag or plugin, not {' and '.join(chosen)}", field=chosen[1]
        )
    if subscription.channel not in Subscription.Channel.values:
        raise ApplicationError(f"channel must be one of {', '.join(Subscription.Channel.values)}", field="channel")
    types = subscription.event_types
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ApplicationError("event_types must be a list of event type names", field="event_types")
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise ApplicationError(
            f"unknown event types: {', '.join(unknown)} (known: {', '.join(EVENT_TYPES)})", field="event_types"
        )
    subscription.event_types = sorted(set(types), key=EVENT_TYPES.index)
    if subscription.channel == Subscription.Channel.WEBHOOK:
        subscription.url = _webhook_url_check(subscription.url)
    else:
        subscription.url = ""


def _finding_for(owner: Any, finding_id: int | None):
    from registry.findings.selectors import finding_list

    if finding_id is None:
        return None
    finding = finding_list(user=owner).filter(pk=finding_id).first()
    if finding is None:  # the same answer for "does not exist" and "you may not see it"
        raise ApplicationError(f"no finding {finding_id}", field="finding")
    return finding


def subscription_create(
    *,
    owner: Any,
    name: str,
    channel: str = Subscription.Channel.WEBHOOK,
    url: str = "",
    finding: int | None = None,
    tag: str = "",
    plugin: str = "",
    event_types: list[str] | None = None,
    active: bool = True,
) -> tuple[Subscription, str]:
    """Create a subscription; returns it and its webhook secret (shown to the owner only now)."""
    subscription = Subscription(
        owner=owner, name=name, channel=channel, url=url, tag=tag or "", plugin=plugin or "",
        event_types=list(event_types or []), active=active,
    )
    subscription.finding = _finding_for(owner, finding)
    _subscription_check(subscription, owner=owner)
    secret = ""
    if subscription.channel == Subscription.Channel.WEBHOOK:
        secret = secrets.token_hex(32)
        subscription.secret = secret
    subscription.after_event_id = Event.objects.aggregate(m=Max("id"))["m"] or 0
    subscription.save()
    return subscription, secret


def subscription_update(*, subscription: Subscription, data: dict[str, Any]) -> tuple[Subscription, str]:
    """Partial update; returns the subscription and a secret only when one was newly generated
    (a feed subscription turned into a webhook)."""
    for field in ("name", "channel", "url", "tag", "plugin", "event_types", "active"):
        if field in data:
            value = data[field]
            setattr(subscription, field, value if value is not None or field == "event_types" else "")
    if subscription.event_types is None:
        subscription.event_types = []
    if "finding" in data:
        subscription.finding = _finding_for(subscription.owner, data["finding"])
    _subscription_check(subscription, owner=subscription.owner)
    secret = ""
    if subscription.channel == Subscription.Channel.WEBHOOK and not subscription.secret:
        secret = secrets.token_hex(32)
        subscription.secret = secret
    elif subscription.channel != Subscription.Channel.WEBHOOK:
        subscription.secret = ""
    subscription.save()
    return subscription, secret


def subscription_delete(*, subscription: Subscription) -> None:
    subscription.delete()


# --- Matching ------------------------------------------------------------------------------------

def subscription_matches(subscription: Subscription, event: Event, *, finding_tags: dict[int, set[str]]) -> bool:
    """The filter alone (visibility is checked separately)."""
    if event.id <= subscription.after_event_id:
        return False
    if subscription.event_types and event.type not in subscription.event_types:
        return False
    if subscription.finding_id is not None:
        return event.finding_id == subscription.finding_id
    if subscription.tag:
        return event.finding_id is not None and subscription.tag in finding_tags.get(event.finding_id, set())
    if subscription.plugin:
        return event.plugin == subscription.plugin
    return True


def _visible_ids(owner: Any, finding_ids: set[int]) -> set[int]:
    from registry.findings.selectors import finding_list

    if not finding_ids:
        return set()
    return set(finding_list(user=owner).filter(id__in=finding_ids).values_list("id", flat=True))


def deliveries_enqueue(event_ids: list[int], *, now: datetime | None = None) -> int:
    """Create pending deliveries of these events for every active webhook subscription whose
    filter matches and whose owner may see the event's finding. Idempotent; returns how many
    deliveries were created."""
    from registry.findings.models import Finding

    now = now or timezone.now()
    events = list(Event.objects.filter(id__in=event_ids).order_by("id"))
    if not events:
        return 0
    subscriptions = list(
        Subscription.objects.filter(active=True, channel=Subscription.Channel.WEBHOOK).select_related("owner")
    )
    if not subscriptions:
        return 0
    finding_ids = {e.finding_id for e in events if e.finding_id is not None}
    finding_tags: dict[int, set[str]] = {}
    for finding_id, tag in Finding.tags.through.objects.filter(finding_id__in=finding_ids).values_list(
        "finding_id", "tag__name"
    ):
        finding_tags.setdefault(finding_id, set()).add(tag)
    visible_by_owner: dict[int, set[int]] = {}
    rows = []
    for subscription in subscriptions:
        for event in events:
            if not subscription_matches(subscription, event, finding_tags=finding_tags):
                continue
            if event.finding_id is not None:
                if subscription.owner_id not in visible_by_owner:
                    visible_by_owner[subscription.owner_id] = _visible_ids(subscription.owner, finding_ids)
                if event.finding_id not in visible_by_owner[subscription.owner_id]:
                    continue
            rows.append(Delivery(subscription=subscription, event=event, next_attempt_at=now))
    before = Delivery.objects.filter(event_id__in=event_ids).count()
    Delivery.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    return Delivery.objects.filter(event_id__in=event_ids).count() - before


# --- Webhook delivery ----------------------------------------------------------------------------

WEBHOOK_TIMEOUT_S = 10
WEBHOOK_MAX_ATTEMPTS = 6
WEBHOOK_BACKOFF_BASE_S = 30  # 30 s, 1 min, 2 min, 4 min, 8 min between the six attempts
WEBHOOK_LEASE_S = 60  # a claimed delivery is not picked again by a concurrent sweep for this long
SWEEP_EVENT_BATCH = 500
SWEEP_MAX_BATCHES = 20
SWEEP_MAX_SENDS = 100
# Event ids are allocated at insert but become visible at commit, so a lower id can appear after a
# higher one. The sweep re-scans events younger than this (enqueueing is idempotent).
SWEEP_COMMIT_LAG_S = 60


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401 - urllib's API
        return None  # a redirect is an answer like any other non-2xx one: not followed


_opener = urllib.request.build_opener(_NoRedirect)


def webhook_body(event: Event) -> bytes:
    return json.dumps(
        {
            "id": event.id, "type": event.type, "finding": event.finding_id, "plugin": event.plugin,
            "payload": event.payload, "created_at": event.created_at.isoformat(),
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


def webhook_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
    hostname = urlsplit(url).hostname or ""
    if not settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES and _is_private_host(hostname):
        return None, f"refused: {hostname} resolves to a non-public address"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            response.read(65536)
            return response.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code} {exc.reason}"
    except Exception as exc:  # noqa: BLE001 - any network failure is a failed attempt
        return None, f"{type(exc).__name__}: {exc}"[:1000]


def delivery_send(delivery: Delivery, *, now: datetime | None = None) -> Delivery:
    """One attempt: POST the event, record the outcome and schedule the retry."""
    now = now or timezone.now()
    subscription, event = delivery.subscription, delivery.event
    error = ""
    code: int | None = None
    if not subscription.active or subscription.channel != Subscription.Channel.WEBHOOK:
        error = "subscription is no longer an active webhook"
    elif event.finding_id is not None and not _visible_ids(subscription.owner, {event.finding_id}):
        error = "the event's finding is not visible to the subscription's owner"
    if error:  # not retried: nothing will change by waiting
        delivery.status, delivery.last_error, delivery.next_attempt_at = Delivery.Status.FAILED, error, None
        delivery.save(update_fields=["status", "last_error", "next_attempt_at"])
        return delivery
    body = webhook_body(event)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "interp-registry-webhooks/1",
        "X-Registry-Event": event.type,
        "X-Registry-Delivery": str(delivery.pk),
        "X-Registry-Signature": webhook_signature(subscription.secret, body),
    }
    code, error = _post(subscription.url, body, headers)
    delivery.attempts += 1
    delivery.last_status_code = code
    if code is not None and 200 <= code < 300:
        delivery.status, delivery.last_error = Delivery.Status.DELIVERED, ""
        delivery.delivered_at, delivery.next_attempt_at = now, None
    else:
        delivery.last_error = error or f"HTTP {code}"
        if delivery.attempts >= WEBHOOK_MAX_ATTEMPTS:
            delivery.status, delivery.next_attempt_at = Delivery.Status.FAILED, None
        else:
            delay = WEBHOOK_BACKOFF_BASE_S * 2 ** (delivery.attempts - 1)
            delivery.next_attempt_at = now + timedelta(seconds=delay)
    delivery.save(
        update_fields=["attempts", "status", "last_status_code", "last_error", "next_attempt_at", "delivered_at"]
    )
    return delivery


def _sweep_enqueue(now: datetime) -> int:
    created = 0
    cutoff = now - timedelta(seconds=SWEEP_COMMIT_LAG_S)
    with transaction.atomic():
        cursor = DeliveryCursor.objects.select_for_update().filter(pk=1).first()
        if cursor is None:
            start = Subscription.objects.filter(channel=Subscription.Channel.WEBHOOK).aggregate(
                m=Min("after_event_id")
            )["m"]
            if start is None:
                start = Event.objects.aggregate(m=Max("id"))["m"] or 0
            DeliveryCursor.objects.get_or_create(pk=1, defaults={"last_event_id": start})
            cursor = DeliveryCursor.objects.select_for_update().get(pk=1)
        position = safe = cursor.last_event_id
        contiguous = True
        for _ in range(SWEEP_MAX_BATCHES):
            rows = list(Event.objects.filter(id__gt=position).order_by("id").values_list("id", "created_at")[
                :SWEEP_EVENT_BATCH
            ])
            if not rows:
                break
            created += deliveries_enqueue([r[0] for r in rows], now=now)
            for event_id, created_at in rows:
                if contiguous and created_at <= cutoff:
                    safe = event_id
                else:
                    contiguous = False
            position = rows[-1][0]
            if len(rows) < SWEEP_EVENT_BATCH:
                break
        if safe != cursor.last_event_id:
            cursor.last_event_id = safe
            cursor.save(update_fields=["last_event_id", "updated_at"])
    return created


def webhooks_sweep(*, now: datetime | None = None, send: bool = True) -> dict[str, int]:
    """The periodic webhook job: (a) match new events to subscriptions, (b) send due deliveries.

    ``now`` drives the clock (tests pass it to step through the retry schedule without sleeping).
    """
    now = now or timezone.now()
    result = {"enqueued": _sweep_enqueue(now), "delivered": 0, "failed": 0, "retrying": 0}
    if not send:
        return result
    due = list(
        Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "id")
        .values_list("id", "next_attempt_at")[:SWEEP_MAX_SENDS]
    )
    started = time.monotonic()
    for delivery_id, due_at in due:
        if time.monotonic() - started > 120:
            break  # the rest waits for the next sweep
        # claim it: a concurrent sweep sees a moved next_attempt_at and skips it
        claimed = Delivery.objects.filter(
            pk=delivery_id, status=Delivery.Status.PENDING, next_attempt_at=due_at
        ).update(next_attempt_at=now + timedelta(seconds=WEBHOOK_LEASE_S))
        if not claimed:
            continue
        delivery = Delivery.objects.select_related("subscription__owner", "event").get(pk=delivery_id)
        delivery = delivery_send(delivery, now=now)
        key = {Delivery.Status.DELIVERED: "delivered", Delivery.Status.FAILED: "failed"}.get(delivery.status)
        result[key or "retrying"] += 1
    return result
