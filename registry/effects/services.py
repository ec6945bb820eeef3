"""Effects: recomputed when a run finishes. (Filled in by the effects work.)"""

from __future__ import annotations


def finding_effects_recompute(*, finding_id: int) -> dict:
    return {}
