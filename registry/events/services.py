"""Writing to the event log. Call inside the transaction of the change being described."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from registry.events.models import Event


def event_emit(*, type: str, finding_id: int | None = None, plugin: str = "", payload: dict[str, Any]) -> Event:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("events must be written in the transaction of the change they describe")
    return Event.objects.create(type=type, finding_id=finding_id, plugin=plugin, payload=payload)
