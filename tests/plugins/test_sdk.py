"""The plugin SDK's helpers: seeding, deterministic mode, PNG encoding, the local context."""

import dataclasses
import io

import pytest
import torch
from interp_registry.sdk import (
    Axis,
    Experiment,
    LocalContext,
    Metric,
    NotReached,
    Scale,
    StopRequested,
    check_stop,
    png_bytes,
    run_locally,
    seed_everything,
)
from PIL import Image
from pydantic import ValidationError

from tests.fakes.plugins import EchoExperiment


@pytest.fixture
def restore_determinism():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def test_deterministic_mode_turns_on_deterministic_kernels(restore_determinism, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seed_everything(3, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_seeding_repeats_random_draws():
    seed_everything(11)
    first = torch.rand(4)
    seed_everything(11)
    assert torch.equal(first, torch.rand(4))


def test_png_bytes_encodes_grey_and_colour_images():
    grey = Image.open(io.BytesIO(png_bytes(torch.linspace(0, 1, 12).reshape(3, 4))))
    assert grey.size == (4, 3) and grey.mode == "L"
    colour = Image.open(io.BytesIO(png_bytes(torch.zeros(2, 5, 3))))
    assert colour.size == (5, 2) and colour.mode == "RGB"


def test_run_locally_validates_parameters_and_records_the_context():
    results, ctx = run_locally(EchoExperiment, {"baseline": 3.0, "effect": -2.0}, seed=5)
    assert results["intervention"]["risk"] == pytest.approx(results["baseline"]["risk"] - 2.0)
    assert ctx.seed == 5 and ctx.device.type == "cpu"
    assert ctx.artifacts == {"values.json": b'{"ok": true}'}
    assert ctx.progress_log[-1] == (1.0, "done")
    with pytest.raises(ValidationError):
        run_locally(EchoExperiment, {"unknown": 1})
    # a result the worker would refuse (risk is on the ratio scale: 1 - 2 < 0) fails here, at once
    with pytest.raises(ValueError, match="metric 'risk' of arm 'intervention' is on the ratio scale"):
        run_locally(EchoExperiment, {"effect": -2.0})


def test_check_stop():
    check_stop(LocalContext())
    with pytest.raises(StopRequested):
        check_stop(LocalContext(stop=True))


def test_metrics_declare_a_scale_and_may_be_times_to_an_event():
    assert [s.value for s in Scale] == ["ratio", "proportion", "difference"]
    plain = Metric("m", Axis.SAFETY, higher_is_better=True)
    assert plain.scale is Scale.DIFFERENCE and plain.time_to_event is False
    timed = Metric("t", Axis.CAPABILITY, higher_is_better=False, scale=Scale.RATIO, time_to_event=True)
    assert timed.scale == "ratio" and timed.time_to_event
    assert Metric("s", Axis.SAFETY, higher_is_better=True, scale="proportion").scale is Scale.PROPORTION
    assert Metric("u", Axis.SAFETY, higher_is_better=True, scale="log").scale == "log"  # refused at discovery


def test_not_reached_carries_its_budget_and_is_frozen():
    value = NotReached(budget=2000.0)
    assert value.budget == 2000.0 and value == NotReached(2000.0) and value != NotReached(1000.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.budget = 1.0  # type: ignore[misc]


def test_the_interval_method_is_not_the_plugins_choice():
    assert not hasattr(Experiment, "interval")
