"""``{% finding_curve_plots finding as plots %}`` and ``{% run_curve_plots run as plots %}``: the
finding page's and the run page's training-curve plots (registry.dashboard.curves), for
dashboard/_curves.html and dashboard/_run_curves.html."""

from __future__ import annotations

from typing import Any

from django import template

from registry.dashboard.curves import finding_curve_plots as _finding_plots
from registry.dashboard.curves import run_curve_plots as _run_plots
from registry.findings.models import Finding
from registry.reproductions.models import Run

register = template.Library()


@register.simple_tag
def finding_curve_plots(finding: Finding) -> list[dict[str, Any]]:
    return _finding_plots(finding)


@register.simple_tag
def run_curve_plots(run: Run) -> list[dict[str, Any]]:
    return _run_plots(run)
