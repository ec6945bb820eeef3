"""``recommended_seeds``: a plugin's declaration, checked like the rest of its contract."""

from __future__ import annotations

import pytest
from interp_registry.sdk import MAX_RECOMMENDED_SEEDS, Experiment
from interp_registry.testing import declaration_errors

from plugins.registry import all_plugins, register_temporarily
from tests.fakes.plugins import EchoExperiment


def _with(seeds):
    return type("Seeded", (EchoExperiment,), {"name": "seeded", "recommended_seeds": seeds,
                                              "__doc__": "Echo recommending seeds."})


def test_the_default_recommends_nothing():
    assert Experiment.recommended_seeds is None
    assert declaration_errors(EchoExperiment) == []


@pytest.mark.parametrize("seeds", [1, 5, MAX_RECOMMENDED_SEEDS])
def test_a_positive_count_up_to_the_maximum_is_valid(seeds):
    assert declaration_errors(_with(seeds)) == []


@pytest.mark.parametrize("seeds", [0, -3, MAX_RECOMMENDED_SEEDS + 1, 2.5, "5", True])
def test_anything_else_is_refused_with_the_reason(seeds):
    errors = declaration_errors(_with(seeds))
    assert errors == [f"recommended_seeds must be an int from 1 to {MAX_RECOMMENDED_SEEDS} (or None), not {seeds!r}"]


def test_a_plugin_declaring_it_wrong_is_listed_unavailable():
    with register_temporarily(_with(0)):
        entry = all_plugins()["seeded"]
        assert not entry.available and "recommended_seeds" in entry.error
