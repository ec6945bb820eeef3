"""Filters for the chart templates (``{% load charts %}``)."""

from __future__ import annotations

from django import template

from registry.dashboard.charts import _n

register = template.Library()


@register.filter
def svgn(value: float | int | None) -> str:
    """A coordinate as SVG text: two decimals at most, never localised ("12.5", "-3")."""
    if value is None:
        return "0"
    return _n(float(value))
