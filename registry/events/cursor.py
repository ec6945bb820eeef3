"""The one commit-ordered cursor over the event log, shared by every reader: ``/events/``, the SSE
stream, the Atom feeds and the webhook sweep.

The problem: an event's id is allocated at insert but becomes visible at commit, so ids become
visible out of order (a probe saw 7, 8, 10, 11 and only later 9). A reader that pages with
``id > last seen id`` moves past 9 and never delivers it.

The rule: **a reader never passes an event that may still commit below it.**

PostgreSQL. Every event stores the id of the transaction that wrote it (``Event.txid``, filled by
the column default ``pg_current_xact_id()``, the top-level transaction's id even inside a
savepoint). Readers order the log by ``(txid, id)`` and return only *settled* events: those whose
``txid`` is below the *horizon*, the oldest transaction id still running in the reader's own
statement snapshot (``pg_snapshot_xip(pg_current_snapshot())``; ``pg_snapshot_xmax`` when none runs),
or the reader's own transaction.
Every transaction below the horizon has finished, so all of its events are already visible to the
statement or will never exist; every transaction that commits later has a transaction id at or
above the horizon (it was running at the snapshot, or it is assigned an id afterwards, and ids are
handed out in increasing order). So once a reader has returned position ``(t, i)`` with
``t < horizon``, nothing can ever appear at a position below it: no event is skipped, none is
returned twice. Ordering by ``id`` alone is not enough even with the horizon: a transaction may
allocate an event id before it is assigned its transaction id, and so fall below an id already
returned. A reader's own transaction counts as settled for it (its events are visible to it): that
only matters to code, such as a test, that reads the log inside the transaction that wrote it;
requests, the stream, the feed and the sweep write no events in the transaction that reads.

SQLite (the embedded default). Writers are serialised: a transaction takes the database's single
write lock at its first write, which is where an event id is allocated, and holds it until commit
or rollback; no other transaction can insert an event in between. Ids therefore become visible in
the order they are allocated (``AUTOINCREMENT`` never reuses one), every visible event is settled,
``txid`` is 0 and the order is the id order.

The cursor handed to clients stays an event id (``?after=``, ``"next"``, SSE ``id:`` and
``Last-Event-ID``, the webhook sweep's ``DeliveryCursor``): its position is that event's
``(txid, id)``. An id that names no (visible) event is placed after the highest ``txid`` among
the events with a lower id, which keeps ``after=0`` "from the beginning".
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import BigIntegerField, Max, Q, QuerySet
from django.db.models.expressions import RawSQL

from registry.events.models import Event

# The oldest transaction that may still commit, in the current statement's snapshot (PostgreSQL).
_PG_HORIZON = (
    "SELECT COALESCE(min(x::text::bigint), pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"
    " FROM pg_snapshot_xip(pg_current_snapshot()) AS x"
)

# The reader's own transaction, when it has written (its events are visible to it; NULL otherwise).
_PG_OWN_TRANSACTION = "pg_current_xact_id_if_assigned()::text::bigint"

_EVERYONE = object()  # visible_to default: no visibility filter (the webhook sweep checks per owner)


def _settled(events: QuerySet[Event]) -> QuerySet[Event]:
    """Only events that no transaction still running can commit below."""
    if connection.vendor == "postgresql":
        return events.filter(
            Q(txid__lt=RawSQL(_PG_HORIZON, (), output_field=BigIntegerField()))
            | Q(txid=RawSQL(_PG_OWN_TRANSACTION, (), output_field=BigIntegerField()))
        )
    return events  # SQLite: writers are serialised, every visible event is settled


def cursor_position(after: int) -> tuple[int, int]:
    """The ``(txid, id)`` position of a client cursor (an event id; 0 = the start)."""
    if after <= 0:
        return (-1, 0)
    txid = Event.objects.filter(pk=after).values_list("txid", flat=True).first()
    if txid is None:
        txid = Event.objects.filter(pk__lt=after).aggregate(m=Max("txid"))["m"]
    return (-1 if txid is None else txid, after)


def deleted_findings_visible(user: Any) -> QuerySet[Event]:
    """The ``finding.deleted`` events (tombstones) of the deleted findings this user could read
    when they were deleted: the audience recorded on the event (``Event.audience_public``,
    ``Event.audience``). A deleted finding's events are visible to exactly these readers; a
    restricted finding's deletion reaches no stranger. Staff read every finding, deleted ones too."""
    from registry.findings.models import Finding

    tombstones = Event.objects.filter(type="finding.deleted", finding_id__isnull=False).exclude(
        finding_id__in=Finding.objects.values("id")  # a rolled-back or premature tombstone decides nothing
    )
    if getattr(user, "is_authenticated", False):
        if user.is_staff:
            return tombstones
        return tombstones.filter(
            Q(audience_public=True) | Q(pk__in=Event.audience.through.objects.filter(user=user).values("event_id"))
        )
    return tombstones.filter(audience_public=True)


def _filtered(
    events: QuerySet[Event], *, visible_to: Any, types: list[str] | None, finding_id: int | None,
) -> QuerySet[Event]:
    if visible_to is not _EVERYONE:
        from registry.findings.selectors import finding_list

        # An event without a finding is everyone's unless it names an audience
        # (``audience_public=False``: e.g. ``subscription.disabled``, its subscription's owner alone).
        unaddressed = Q(finding_id__isnull=True) & (Q(audience_public__isnull=True) | Q(audience_public=True))
        if getattr(visible_to, "is_authenticated", False):
            unaddressed |= Q(finding_id__isnull=True, audience_public=False) & Q(
                pk__in=Event.audience.through.objects.filter(user=visible_to).values("event_id")
            )
        events = events.filter(
            unaddressed
            | Q(finding_id__in=finding_list(user=visible_to).values("id"))
            | Q(finding_id__in=deleted_findings_visible(visible_to).values("finding_id"))
        )
    if types:
        events = events.filter(type__in=types)
    if finding_id is not None:
        events = events.filter(finding_id=finding_id)
    return events


def events_after(
    after: int = 0,
    *,
    limit: int,
    visible_to: Any = _EVERYONE,
    types: list[str] | None = None,
    finding_id: int | None = None,
    events: QuerySet[Event] | None = None,
) -> list[Event]:
    """The next ``limit`` settled events after the event id ``after``, in cursor order.

    ``visible_to`` (a user, anonymous included) keeps only events the user may see: hidden events
    are left out of the scan itself, so they neither appear nor move the cursor, and a hidden
    finding looks exactly like an absent one. ``events`` narrows the log further (tag, plugin).
    The last returned event's id is the next cursor; with none returned the cursor stays.
    """
    txid, event_id = cursor_position(after)
    scan = _filtered(
        Event.objects.all() if events is None else events,
        visible_to=visible_to, types=types, finding_id=finding_id,
    )
    scan = _settled(scan.filter(Q(txid__gt=txid) | Q(txid=txid, id__gt=event_id)))
    return list(scan.order_by("txid", "id")[:limit])


def events_latest(
    *, limit: int, visible_to: Any = _EVERYONE, events: QuerySet[Event] | None = None
) -> list[Event]:
    """The ``limit`` most recent settled events, newest (highest cursor position) first."""
    scan = _filtered(Event.objects.all() if events is None else events, visible_to=visible_to, types=None,
                     finding_id=None)
    return list(_settled(scan).order_by("-txid", "-id")[:limit])


def events_head() -> int:
    """The cursor for "from now": the id of the last settled event (0 for an empty log). Every
    event that commits later comes after it."""
    last = _settled(Event.objects.all()).order_by("-txid", "-id").values_list("id", flat=True).first()
    return last or 0
