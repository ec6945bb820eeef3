"""Writing to the event log. Call inside the transaction of the change being described."""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from registry.errors import ApplicationError
from registry.events.cursor import cursor_position, events_after, events_head
from registry.events.models import Delivery, DeliveryCursor, Event, Subscription
from registry.events.webhooks import (  # noqa: F401 - re-exported: the webhook code moved there
    WEBHOOK_BACKOFF_BASE_S,
    WEBHOOK_MAX_ATTEMPTS,
    WEBHOOK_TIMEOUT_S,
    PostResult,
    _is_private_host,
    _NoRedirect,
    _post,
    _webhook_url_check,
    delivery_attempt_post,
    delivery_attempt_record,
    delivery_redeliver,
    delivery_refusal,
    delivery_refused,
    delivery_send,
    subscription_secret_rotate,
    webhook_body,
    webhook_headers,
    webhook_ping,
    webhook_secret_generate,
    webhook_signature,
)


def event_emit(
    *,
    type: str,
    finding_id: int | None = None,
    plugin: str = "",
    payload: dict[str, Any],
    audience: list[int] | None = None,
) -> Event:
    """Write one event. ``audience`` (user ids, for an event without a finding) makes it visible to
    those users alone on every surface (``/events/``, the stream, the feeds, webhooks) instead of
    to everyone, e.g. ``subscription.disabled`` to the subscription's owner."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("events must be written in the transaction of the change they describe")
    if audience is not None and finding_id is not None:
        raise ValueError("an event about a finding is visible to the finding's readers; audience is for the others")
    event = Event.objects.create(
        type=type, finding_id=finding_id, plugin=plugin, payload=payload,
        **({"audience_public": False} if audience is not None else {}),
    )
    if audience is not None:
        event.audience_public = False
        event.audience.set(audience)
    if type == "finding.deleted" and finding_id is not None:
        _audience_record(event)
    return event


def event_visible_to(event: Event, user: Any) -> bool:
    """Whether this user may see this event (the rule of ``registry.events.cursor``, for one event):
    an event about a finding by the finding's visibility (a deleted one's by its recorded audience),
    one without a finding by its audience when it has one, else to everyone."""
    if event.finding_id is not None:
        return bool(_visible_ids(user, {event.finding_id}))
    if event.audience_public is False:
        return bool(getattr(user, "is_authenticated", False)) and event.audience.filter(pk=user.pk).exists()
    return True


def _audience_record(event: Event) -> None:
    """Remember who can read the finding now, before it is deleted: afterwards the visibility rule
    has only this to go on (so ``finding.deleted`` reaches exactly those who could see it)."""
    from registry.findings.models import Finding
    from registry.findings.selectors import finding_list

    finding = Finding.objects.filter(pk=event.finding_id).first()
    if finding is None:
        event.audience_public = False
    else:
        event.audience_public = finding_list(user=AnonymousUser()).filter(pk=finding.pk).exists()
        if not event.audience_public:
            readers = {  # finding_list's rule: accepted and invited authors (not declined), shared-with users
                *finding.authors.values_list("pk", flat=True),
                *finding.invited_authors.values_list("pk", flat=True),
                *finding.restricted_to.values_list("pk", flat=True),
            }
            event.audience.set(readers)
    Event.objects.filter(pk=event.pk).update(audience_public=event.audience_public)


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
    "subscription.disabled",  # the owner's own subscriptions only
)

_UNSET = object()


def _subscription_check(subscription: Subscription, *, owner: Any, check_url: bool = True) -> None:
    """Validate the whole (merged) subscription; raises ApplicationError naming the field.
    ``check_url=False`` skips resolving the webhook URL again (it has not changed)."""
    if not (subscription.name or "").strip():
        raise ApplicationError("name is required", field="name")
    chosen = [
        f for f in ("finding", "tag", "plugin")
        if (subscription.finding_ref if f == "finding" else getattr(subscription, f)) not in (None, "")
    ]
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
        if check_url:
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
    subscription.finding_ref = subscription.finding.pk if subscription.finding else None
    _subscription_check(subscription, owner=owner)
    secret = ""
    if subscription.channel == Subscription.Channel.WEBHOOK:
        secret = webhook_secret_generate()
        subscription.secret = secret
    # "From now" on the commit-ordered cursor: an event with a lower id that commits later still
    # comes after this position (see registry.events.cursor).
    subscription.after_event_id = events_head()
    subscription.save()
    return subscription, secret


def subscription_update(*, subscription: Subscription, data: dict[str, Any]) -> tuple[Subscription, str]:
    """Partial update; returns the subscription and a secret only when one was newly generated
    (a feed subscription turned into a webhook). Setting ``active`` to true re-enables a
    subscription and clears its ``disabled_reason`` and failure count. The webhook URL is resolved
    and checked again only when it changes (or the subscription becomes a webhook)."""
    previous_url, previous_channel = subscription.url, subscription.channel
    if data.get("active") is True:
        subscription.disabled_reason, subscription.disabled_at = "", None
        subscription.consecutive_failures, subscription.failing_since = 0, None
    for field in ("name", "channel", "url", "tag", "plugin", "event_types", "active"):
        if field in data:
            value = data[field]
            setattr(subscription, field, value if value is not None or field == "event_types" else "")
    if subscription.event_types is None:
        subscription.event_types = []
    if "finding" in data:
        subscription.finding = _finding_for(subscription.owner, data["finding"])
        subscription.finding_ref = subscription.finding.pk if subscription.finding else None
    url_changed = subscription.url != previous_url or subscription.channel != previous_channel
    _subscription_check(subscription, owner=subscription.owner, check_url=url_changed)
    secret = ""
    if subscription.channel == Subscription.Channel.WEBHOOK and not subscription.secret:
        secret = webhook_secret_generate()
        subscription.secret = secret
    elif subscription.channel != Subscription.Channel.WEBHOOK:
        subscription.secret = subscription.previous_secret = ""
        subscription.previous_secret_expires_at = None
    subscription.save()
    return subscription, secret


def subscription_delete(*, subscription: Subscription) -> None:
    subscription.delete()


# --- Matching ------------------------------------------------------------------------------------

def subscription_matches(
    subscription: Subscription,
    event: Event,
    *,
    finding_tags: dict[int, set[str]],
    start: tuple[int, int] | None = None,
) -> bool:
    """The filter alone (visibility is checked separately). ``start`` is the subscription's cursor
    position (``cursor_position(subscription.after_event_id)``): events at or before it predate
    the subscription."""
    start = start if start is not None else cursor_position(subscription.after_event_id)
    if (event.txid, event.id) <= start:
        return False
    if subscription.event_types and event.type not in subscription.event_types:
        return False
    if subscription.finding_ref is not None:  # kept after the finding's deletion: its finding.deleted matches
        return event.finding_id == subscription.finding_ref
    if subscription.tag:
        return event.finding_id is not None and subscription.tag in finding_tags.get(event.finding_id, set())
    if subscription.plugin:
        return event.plugin == subscription.plugin
    return True


def _visible_ids(owner: Any, finding_ids: set[int]) -> set[int]:
    """The findings among these the owner may see: existing ones by the visibility rule, deleted
    ones by the audience recorded on their ``finding.deleted`` event."""
    from registry.events.cursor import deleted_findings_visible
    from registry.findings.selectors import finding_list

    if not finding_ids:
        return set()
    visible = set(finding_list(user=owner).filter(id__in=finding_ids).values_list("id", flat=True))
    missing = finding_ids - visible
    if missing:
        deleted = deleted_findings_visible(owner).filter(finding_id__in=missing)
        visible |= set(deleted.values_list("finding_id", flat=True))
    return visible


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
    for event in events:  # a deleted finding's tags survive in its finding.deleted payload
        if event.type == "finding.deleted" and event.finding_id not in finding_tags:
            tags = event.payload.get("tags") if isinstance(event.payload, dict) else None
            if isinstance(tags, list):
                finding_tags[event.finding_id] = {t for t in tags if isinstance(t, str)}
    visible_by_owner: dict[int, set[int]] = {}
    # Events without a finding but with an audience (subscription.disabled): those users alone.
    audiences: dict[int, set[int]] = {
        e.id: set() for e in events if e.finding_id is None and e.audience_public is False
    }
    for event_id, user_id in Event.audience.through.objects.filter(event_id__in=audiences).values_list(
        "event_id", "user_id"
    ):
        audiences[event_id].add(user_id)
    starts = {s.after_event_id: cursor_position(s.after_event_id) for s in subscriptions}
    rows = []
    for subscription in subscriptions:
        for event in events:
            start = starts[subscription.after_event_id]
            if not subscription_matches(subscription, event, finding_tags=finding_tags, start=start):
                continue
            if event.finding_id is not None:
                if subscription.owner_id not in visible_by_owner:
                    visible_by_owner[subscription.owner_id] = _visible_ids(subscription.owner, finding_ids)
                if event.finding_id not in visible_by_owner[subscription.owner_id]:
                    continue
            elif event.id in audiences and subscription.owner_id not in audiences[event.id]:
                continue
            rows.append(Delivery(subscription=subscription, event=event, next_attempt_at=now))
    before = Delivery.objects.filter(event_id__in=event_ids).count()
    Delivery.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    return Delivery.objects.filter(event_id__in=event_ids).count() - before


# --- Webhook delivery ----------------------------------------------------------------------------

# A claimed delivery is not picked again by a concurrent sweep (nor redelivered) for this long,
# counted from the moment of the claim (the real clock, not the sweep's start: a sweep claims for
# up to SWEEP_SEND_BUDGET_S). Claims are taken one at a time as pool threads free up, right before
# the POST, and an attempt takes at most WEBHOOK_TIMEOUT_S, so the lease is never shorter than
# that plus a margin (for recording the outcome). An attempt whose lease was lost anyway (a stalled
# process) is not recorded: the row is no longer ours (see ``delivery_attempt_record``).
WEBHOOK_LEASE_S = 60
WEBHOOK_LEASE_MARGIN_S = 20


def webhook_lease_s() -> float:
    return max(WEBHOOK_LEASE_S, WEBHOOK_TIMEOUT_S + WEBHOOK_LEASE_MARGIN_S)


SWEEP_EVENT_BATCH = 500
SWEEP_MAX_BATCHES = 20
SWEEP_MAX_SENDS = 5000  # due deliveries considered per sweep (1,000 to a fast receiver take seconds)
SWEEP_SEND_BUDGET_S = 120  # no new claims after this long; attempts under way finish (<= 10 s each)


def _sweep_enqueue(now: datetime) -> int:
    """Match the events after the sweep's cursor to subscriptions. The cursor is the commit-ordered
    one (``registry.events.cursor``): it never passes an event that may still commit below it, so
    no lag window is needed and each event is matched once."""

    created = 0
    with transaction.atomic():
        cursor = DeliveryCursor.objects.select_for_update().filter(pk=1).first()
        if cursor is None:
            # The earliest subscription's start on the commit-ordered cursor, else "from now".
            starts = Subscription.objects.filter(channel=Subscription.Channel.WEBHOOK).values_list(
                "after_event_id", flat=True
            ).distinct()
            start = min(starts, key=cursor_position, default=None)
            if start is None:
                start = events_head()
            DeliveryCursor.objects.get_or_create(pk=1, defaults={"last_event_id": start})
            cursor = DeliveryCursor.objects.select_for_update().get(pk=1)
        position = cursor.last_event_id
        for _ in range(SWEEP_MAX_BATCHES):
            batch = events_after(position, limit=SWEEP_EVENT_BATCH)
            if not batch:
                break
            created += deliveries_enqueue([e.id for e in batch], now=now)
            position = batch[-1].id
            if len(batch) < SWEEP_EVENT_BATCH:
                break
        if position != cursor.last_event_id:
            cursor.last_event_id = position
            cursor.save(update_fields=["last_event_id", "updated_at"])
    return created


def _attempt_in_pool(delivery: Delivery, body: bytes, now: datetime) -> PostResult:
    """A pool thread's work: sign and POST (no database access), then close the thread's
    database connection in case anything opened one."""
    try:
        return delivery_attempt_post(delivery, body, now=now)
    finally:
        connection.close()


def webhooks_sweep(*, now: datetime | None = None, send: bool = True) -> dict[str, int]:
    """The periodic webhook job: (a) match new events to subscriptions, (b) send due deliveries.

    Sending is concurrent: up to ``WEBHOOKS_SEND_CONCURRENCY`` POSTs at once in a thread pool, so a
    slow endpoint holds one thread, not the sweep. The sweep's own thread does all the database
    work (claim, load, record): it works the same on SQLite (one writer) and inside a caller's
    transaction, and the pool threads never hold a connection. A delivery is claimed (its lease
    taken by a conditional update) only when a thread is free to send it, so two concurrent sweeps
    (or a sweep and a redelivery) never send the same delivery.

    ``now`` drives the clock (tests pass it to step through the retry schedule without sleeping):
    it is the sweep's start, and each claim, attempt and record is timed at ``now`` plus the real
    time elapsed since (the real clock when ``now`` is not given).
    """
    started = time.monotonic()
    explicit_now = now is not None
    now = now or timezone.now()

    def clock() -> datetime:
        if explicit_now:
            return now + timedelta(seconds=time.monotonic() - started)
        return timezone.now()

    result = {"enqueued": _sweep_enqueue(now), "delivered": 0, "failed": 0, "retrying": 0, "lease_lost": 0}
    if not send:
        return result
    due = list(
        Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
        .order_by("next_attempt_at", "id")
        .values_list("id", "next_attempt_at")[:SWEEP_MAX_SENDS]
    )
    if not due:
        return result
    concurrency = max(1, int(settings.WEBHOOKS_SEND_CONCURRENCY))
    bodies: dict[int, bytes] = {}  # one body per event: a fan-out signs the same bytes for everyone
    in_flight: dict[Future[PostResult], tuple[Delivery, datetime]] = {}

    def count(delivery: Delivery | None) -> None:
        if delivery is None:  # the lease was lost before the outcome came: not recorded
            result["lease_lost"] += 1
            return
        key = {Delivery.Status.DELIVERED: "delivered", Delivery.Status.FAILED: "failed"}.get(delivery.status)
        result[key or "retrying"] += 1

    def drain(below: int) -> None:
        """Record finished attempts until fewer than ``below`` are under way."""
        while in_flight and len(in_flight) >= below:
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in done:
                delivery, attempted_at = in_flight.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # noqa: BLE001 - a bug in signing is a failed attempt
                    outcome = PostResult(None, f"{type(exc).__name__}: {exc}"[:1000], 0.0, "")
                count(delivery_attempt_record(delivery, outcome, now=clock(), attempted_at=attempted_at))

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="webhook-send") as pool:
        try:
            for delivery_id, due_at in due:
                if time.monotonic() - started > SWEEP_SEND_BUDGET_S:
                    break  # the rest waits for the next sweep
                drain(concurrency)  # claim only when a thread is free
                claimed_at = clock()  # the lease runs from the claim, not from the sweep's start
                lease = claimed_at + timedelta(seconds=webhook_lease_s())
                # claim it: a concurrent sweep sees a moved next_attempt_at (and the lease) and skips it
                claimed = Delivery.objects.filter(
                    Q(claimed_until__isnull=True) | Q(claimed_until__lte=claimed_at),
                    pk=delivery_id, status=Delivery.Status.PENDING, next_attempt_at=due_at,
                ).update(next_attempt_at=lease, claimed_until=lease)
                if not claimed:
                    continue
                delivery = Delivery.objects.select_related("subscription__owner", "event").get(pk=delivery_id)
                refusal = delivery_refusal(delivery)
                if refusal:
                    count(delivery_refused(delivery, refusal))
                    continue
                if delivery.event_id not in bodies:
                    bodies[delivery.event_id] = webhook_body(delivery.event)
                delivery.claimed_until = lease  # what the record checks the row still holds
                attempted_at = clock()
                future = pool.submit(_attempt_in_pool, delivery, bodies[delivery.event_id], attempted_at)
                in_flight[future] = (delivery, attempted_at)
        finally:
            drain(1)  # record every attempt under way
    return result
