"""Formatting filters for the dashboard templates."""

from __future__ import annotations

import math

from django import template

from registry.dashboard.charts import fmt_number, fmt_percent

register = template.Library()


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@register.filter
def percent(value) -> str:
    """A relative change: -0.5 -> "-50%"; None -> "n/a"."""
    number = _number(value)
    return "n/a" if number is None else fmt_percent(number)


@register.filter
def num(value) -> str:
    """Three significant digits; None -> "n/a"."""
    number = _number(value)
    return "n/a" if number is None else fmt_number(number)


@register.filter
def pvalue(value) -> str:
    number = _number(value)
    if number is None:
        return "n/a"
    return "< 0.001" if number < 0.001 else f"{number:.3f}"


@register.filter
def slug(value) -> str:
    """A value as a CSS modifier: "failed_to_reproduce" -> "failed-to-reproduce"."""
    return str(value).replace("_", "-").replace(" ", "-").lower()


@register.filter
def humanise(value) -> str:
    return str(value).replace("_", " ")
