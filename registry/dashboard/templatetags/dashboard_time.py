"""Times on the dashboard: always in UTC, said so, and machine-readable (``<time datetime>``)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()

FORMATS = {"minutes": "%Y-%m-%d %H:%M", "seconds": "%Y-%m-%d %H:%M:%S"}


@register.filter
def utc(value: object, precision: str = "minutes") -> SafeString | str:
    """A datetime as ``<time datetime="2026-12-02T17:14:44Z">2026-12-02 17:14 UTC</time>``
    (``precision``: minutes or seconds); a date as ``<time datetime="2026-12-02">2026-12-02</time>``;
    anything else (None) as an empty string, so ``|default:"—"`` applies."""
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        text = moment.strftime(FORMATS.get(precision, FORMATS["minutes"]))
        return format_html(
            '<time datetime="{}">{} UTC</time>', moment.isoformat(timespec="seconds").replace("+00:00", "Z"), text
        )
    if isinstance(value, date):
        return format_html('<time datetime="{}">{}</time>', value.isoformat(), value.isoformat())
    return ""
