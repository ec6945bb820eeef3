"""``{% finding_curve_plots finding as plots %}``: the finding page's training-curve plots
(registry.dashboard.curves), for dashboard/_curves.html."""

from __future__ import annotations

from typing import Any

from django import template

from registry.dashboard.curves import finding_curve_plots as _plots
from registry.findings.models import Finding

register = template.Library()


@register.simple_tag
def finding_curve_plots(finding: Finding) -> list[dict[str, Any]]:
    return _plots(finding)
