"""What a person or a receiver needs to read an event without a second call: the finding's title,
absolute links (API and dashboard page of the finding and of the run), the verdict, a summary of
the run's measurements, and a one-line human title.

Computed when the event is read (delivery, feed), not stored: the links follow
``REGISTRY_BASE_URL`` and the title is the finding's current one (the title stored in the event's
payload when the finding no longer exists). Callers only present events the reader may see (the
cursor's visibility filter, the delivery's visibility check), so nothing here checks visibility.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import NoReverseMatch, reverse

from registry.events.models import Event

MEASUREMENTS_SUMMARY_MAX = 20


def _url(name: str, pk: int) -> str | None:
    try:
        return settings.REGISTRY_BASE_URL + reverse(name, args=[pk])
    except NoReverseMatch:
        return None


def finding_titles(events: list[Event]) -> dict[int, str]:
    """The titles of the events' findings that still exist (one query)."""
    from registry.findings.models import Finding

    ids = {e.finding_id for e in events if e.finding_id is not None}
    if not ids:
        return {}
    return dict(Finding.objects.filter(pk__in=ids).values_list("pk", "title"))


def _run_id(event: Event) -> int | None:
    run = event.payload.get("run") if event.type.startswith("run.") and isinstance(event.payload, dict) else None
    return run if isinstance(run, int) and not isinstance(run, bool) else None


def event_links(event: Event, *, finding_exists: bool) -> dict[str, str]:
    links: dict[str, str | None] = {}
    if event.finding_id is not None and finding_exists:
        links["finding"] = _url("api:finding-detail", event.finding_id)
        links["finding_page"] = _url("dashboard:finding-detail", event.finding_id)
    run = _run_id(event)
    if run is not None and finding_exists:
        links["run"] = _url("api:run-detail", run)
        links["run_page"] = _url("dashboard:run-detail", run)
    return {k: v for k, v in links.items() if v}


def _verdict(event: Event) -> dict[str, Any] | None:
    payload = event.payload if isinstance(event.payload, dict) else {}
    if event.type == "finding.verdict_changed":
        return {k: payload.get(k) for k in ("claim", "metric", "old", "new")}
    if event.type == "finding.status_changed":
        return {"status_old": payload.get("old"), "status_new": payload.get("new")}
    return None


def _measurements(event: Event) -> dict[str, Any] | None:
    from registry.reproductions.models import Measurement

    run = _run_id(event)
    if event.type != "run.finished" or run is None:
        return None
    attached = getattr(event, "measurements_summary", None)  # registry.events.selectors, for a list
    if attached is not None:
        return attached
    rows = list(
        Measurement.objects.filter(run_id=run).order_by("arm", "metric")
        .values("arm", "metric", "value", "censored")[: MEASUREMENTS_SUMMARY_MAX + 1]
    )
    return {
        "count": Measurement.objects.filter(run_id=run).count(),
        "values": rows[:MEASUREMENTS_SUMMARY_MAX],
        "truncated": len(rows) > MEASUREMENTS_SUMMARY_MAX,
    }


def event_title(event: Event, finding_title: str | None) -> str:
    """A one-line title for people, e.g. "Run 12 of <finding title> finished (succeeded)"."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    of = f"“{finding_title}”" if finding_title else (f"finding #{event.finding_id}" if event.finding_id else "")
    run = _run_id(event)
    if event.type in ("run.started", "run.finished", "run.requeued"):
        verb = {"run.started": "started", "run.finished": "finished", "run.requeued": "was requeued"}.get(
            event.type, event.type.split(".", 1)[1]
        )
        state = f" ({payload['state']})" if event.type == "run.finished" and payload.get("state") else ""
        return f"{f'Run {run}' if run is not None else 'A run'} of {of} {verb}{state}"
    fixed = {
        "finding.created": f"New finding: {of}",
        "finding.updated": f"Finding {of} was edited",
        "finding.deleted": f"Finding {of} was deleted",
        "claim.created": f"New claim on {of}",
        "claim.updated": f"A claim of {of} was edited",
        "experiment.created": f"New experiment on {of}",
        "experiment.retracted": f"An experiment of {of} was retracted",
        "reproduction.requested": f"Reproduction requested for {of}",
        "finding.stale": f"{of} has results from an older plugin version",
        "finding.effects_failed": f"Recomputing the effects of {of} failed",
    }
    if event.type == "subscription.disabled":
        return f"Your webhook “{payload.get('name') or payload.get('subscription')}” was disabled"
    if event.type == "finding.verdict_changed":
        return (f"Verdict on {payload.get('metric') or 'a claim'} of {of}: "
                f"{payload.get('old') or 'none'} → {payload.get('new')}")
    if event.type == "finding.status_changed":
        return f"{of} is now {str(payload.get('new') or '').replace('_', ' ')}"
    return fixed.get(event.type) or (f"{event.type} on {of}" if of else event.type)


def event_summary(event: Event, finding_title: str | None) -> str:
    """Plain text (the feed escapes it): what happened, in a few lines."""
    lines = [event_title(event, finding_title)]
    verdict = _verdict(event)
    if verdict and event.type == "finding.verdict_changed":
        lines.append(f"Claim {verdict['claim']} ({verdict['metric']}): {verdict['old']} → {verdict['new']}")
    measurements = _measurements(event)
    if measurements:
        shown = ", ".join(
            f"{m['arm']}.{m['metric']} = {'≥ ' if m['censored'] else ''}{m['value']:g}" for m in measurements["values"]
        )
        lines.append(f"{measurements['count']} measurements" + (f": {shown}" if shown else ""))
    payload = event.payload if isinstance(event.payload, dict) else {}
    if payload.get("error"):
        lines.append(f"Error: {payload['error']}")
    if event.plugin:
        lines.append(f"Plugin: {event.plugin}")
    return "\n".join(lines)


def event_details(event: Event, *, titles: dict[int, str] | None = None) -> dict[str, Any]:
    """The receiver-facing additions of a webhook body."""
    titles = finding_titles([event]) if titles is None else titles
    exists = event.finding_id in titles
    payload = event.payload if isinstance(event.payload, dict) else {}
    title = titles.get(event.finding_id) if exists else payload.get("title")
    details: dict[str, Any] = {
        "title": event_title(event, title),
        "finding_title": title,
        "links": event_links(event, finding_exists=exists),
    }
    verdict = _verdict(event)
    if verdict:
        details["verdict"] = verdict
    measurements = _measurements(event)
    if measurements:
        details["measurements"] = measurements
    return details
