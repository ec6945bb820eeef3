"""A built-in's tiny preset, run by the worker's runner (its real child process), stores its
training curves with the result."""

import pytest

from plugins.registry import get_plugin
from registry.reproductions import services
from registry.reproductions.models import Run, RunSeries
from tests.factories import FindingFactory
from worker.runner import run_execute

pytestmark = pytest.mark.django_db(transaction=True)


def test_checkerboard_tiny_stores_energy_and_loss_curves_per_arm(user, monkeypatch):
    monkeypatch.setattr(services, "runs_dispatch", lambda run_ids, **kwargs: None)  # no worker takes them
    plugin = get_plugin("checkerboard")
    tiny = plugin.presets["tiny"]
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(finding=finding, user=user, plugin="checkerboard", params=tiny,
                                            reproduce=False)
    run = services.reproduction_request(experiment=experiment, user=user, seeds=[0], device="cpu").runs.get()
    assert run_execute(run.pk, worker_host="test-host") == "succeeded"
    run = Run.objects.get(pk=run.pk)
    curves = {(c.arm, c.name): c for c in RunSeries.objects.filter(run=run)}
    assert set(curves) == {(arm, name) for arm in ("baseline", "intervention")
                           for name in ("checkerboard_energy", "train_loss")}
    measured = {(m.arm, m.metric): m.value for m in run.measurements.all()}
    for arm in ("baseline", "intervention"):
        energy = curves[(arm, "checkerboard_energy")]
        assert energy.steps[0] == 0 and energy.steps[-1] == tiny["steps"]  # from initialisation to the end
        assert energy.steps == sorted(set(energy.steps)) and len(energy.steps) <= 200
        assert energy.values[-1] == pytest.approx(measured[(arm, "checkerboard_energy")])  # ends at the metric
        loss = curves[(arm, "train_loss")]
        assert loss.steps[-1] == tiny["steps"] and all(value > 0 for value in loss.values)
    # deconvolution (baseline) ends with far more checkerboard energy than resize-convolution
    final = {arm: curves[(arm, "checkerboard_energy")].values[-1] for arm in ("baseline", "intervention")}
    assert final["baseline"] > final["intervention"]
