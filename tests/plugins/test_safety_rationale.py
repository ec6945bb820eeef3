"""Every built-in's safety-axis metric says in its description why it counts as safety (issue 14: "every
'safety' label gets one line in the plugin's description saying why, and where it is a judgement call").

The convention of the built-ins' descriptions: a sentence "Safety because <why>" or "Safety, a judgement
call: <why>", and "judgement call" wherever the label is one."""

from __future__ import annotations

import re

import pytest
from interp_registry.sdk import Axis

from plugins.registry import all_plugins

RATIONALE = re.compile(r"\bSafety(?: because|, a judgement call:) \w+")
BUILTINS = sorted(name for name, entry in all_plugins().items() if entry.source.startswith("plugins."))


def test_the_builtins_are_found():
    assert {"checkerboard", "sae", "topk_sae", "shift", "leace", "shortcut"} <= set(BUILTINS)


@pytest.mark.parametrize("name", BUILTINS)
def test_every_safety_metric_says_why_it_counts_as_safety(name):
    entry = all_plugins()[name]
    assert entry.available, entry.error
    safety = [metric for metric in entry.experiment.metrics if metric.axis is Axis.SAFETY]
    for metric in safety:
        assert RATIONALE.search(metric.description), (
            f"{name}.{metric.name}: the description gives no 'Safety because ...' (or 'Safety, a judgement "
            f"call: ...') rationale: {metric.description!r}"
        )
