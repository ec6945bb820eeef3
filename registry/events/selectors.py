"""Reading the event log: always through the commit-ordered cursor (see ``registry.events.cursor``)."""

from __future__ import annotations

from registry.events.cursor import events_after, events_head, events_latest

__all__ = ["events_after", "events_head", "events_latest"]
