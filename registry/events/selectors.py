"""Reading the event log: always through the commit-ordered cursor (see ``registry.events.cursor``)."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, F, Window
from django.db.models.functions import RowNumber

from registry.events.cursor import events_after, events_head, events_latest
from registry.events.models import Event

__all__ = ["events_after", "events_head", "events_latest", "measurement_summaries_attach"]


def measurement_summaries_attach(events: list[Event]) -> None:
    """Set ``measurements_summary`` on each ``run.finished`` event naming a run: the summary that
    ``registry.events.presentation`` would otherwise read with two queries per event (the count
    and the first ``MEASUREMENTS_SUMMARY_MAX`` values by arm and metric), here one query for all."""
    from registry.events.presentation import MEASUREMENTS_SUMMARY_MAX, _run_id
    from registry.reproductions.models import Measurement

    finished = [(event, _run_id(event)) for event in events if event.type == "run.finished"]
    finished = [(event, run) for event, run in finished if run is not None]
    if not finished:
        return
    rows = (
        Measurement.objects.filter(run_id__in={run for _, run in finished})
        .annotate(
            position=Window(RowNumber(), partition_by=[F("run_id")], order_by=[F("arm").asc(), F("metric").asc()]),
            total=Window(Count("id"), partition_by=[F("run_id")]),
        )
        .filter(position__lte=MEASUREMENTS_SUMMARY_MAX + 1)
        .order_by("run_id", "arm", "metric")
        .values("run_id", "arm", "metric", "value", "censored", "total")
    )
    per_run: dict[int, dict[str, Any]] = {}
    for row in rows:
        summary = per_run.setdefault(row["run_id"], {"count": row["total"], "values": [], "truncated": False})
        if len(summary["values"]) < MEASUREMENTS_SUMMARY_MAX:
            summary["values"].append({k: row[k] for k in ("arm", "metric", "value", "censored")})
        else:
            summary["truncated"] = True
    for event, run in finished:
        found = per_run.get(run)
        event.measurements_summary = (  # type: ignore[attr-defined]
            {"count": found["count"], "values": list(found["values"]), "truncated": found["truncated"]}
            if found else {"count": 0, "values": [], "truncated": False}
        )
