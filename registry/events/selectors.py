from __future__ import annotations

from django.db.models import QuerySet

from registry.events.models import Event


def event_list(*, after: int = 0, types: list[str] | None = None, finding_id: int | None = None) -> QuerySet[Event]:
    events = Event.objects.filter(id__gt=after).order_by("id")
    if types:
        events = events.filter(type__in=types)
    if finding_id is not None:
        events = events.filter(finding_id=finding_id)
    return events
