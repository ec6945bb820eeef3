"""Reading effects. (Filled in by the effects work.)"""

from __future__ import annotations

from typing import Any

from registry.findings.models import Finding


def finding_effects_get(*, finding: Finding, user: Any) -> dict:
    cache = getattr(finding, "effects_cache", None)
    return cache.data if cache else {"finding": finding.pk, "metrics": [], "claims": []}
