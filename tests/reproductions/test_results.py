"""A plugin's results against its metric declarations: scales, times to an event that were not
reached (stored censored at the budget), and the metric catalogue's record of both."""

import math

import pytest
from interp_registry.sdk import NotReached, Scale, run_locally

from plugins.registry import register_temporarily
from registry.reproductions import services
from registry.reproductions.models import Measurement, MetricDefinition
from tests.factories import FindingFactory
from tests.fakes.plugins import EchoExperiment, TimedExperiment


def _results(**changes):
    baseline = {"steps_to_goal": NotReached(100.0), "accuracy": 0.5, "loss": 1.0, "count": 0.0}
    intervention = {"steps_to_goal": 40.0, "accuracy": 0.5, "loss": 1.0, "count": 0.0}
    for key, value in changes.items():
        arm, metric = key.split("__")
        (baseline if arm == "baseline" else intervention)[metric] = value
    return {"baseline": baseline, "intervention": intervention}


def test_not_reached_becomes_a_row_censored_at_the_budget():
    rows = services.validate_results(TimedExperiment, _results())
    by_key = {(row.arm, row.metric): row for row in rows}
    assert by_key["baseline", "steps_to_goal"] == ("baseline", "steps_to_goal", 1, 100.0, True)
    assert by_key["intervention", "steps_to_goal"] == ("intervention", "steps_to_goal", 1, 40.0, False)
    assert not any(row.censored for row in rows if row.metric != "steps_to_goal")
    # a plugin's own output, as run_locally returns it, passes the same way
    results, _ = run_locally(TimedExperiment, {"intervention_steps": None, "budget": 7}, seed=0)
    censored = [row for row in services.validate_results(TimedExperiment, results) if row.censored]
    assert [(row.arm, row.value) for row in censored] == [("baseline", 7.0), ("intervention", 7.0)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"baseline__loss": 0.0}, "metric 'loss' of arm 'baseline' is on the ratio scale and must be > 0, not 0.0"),
        ({"intervention__loss": -2.5}, "metric 'loss' of arm 'intervention' is on the ratio scale and must be > 0"),
        ({"intervention__steps_to_goal": 0}, "metric 'steps_to_goal' of arm 'intervention' is on the ratio scale"),
        ({"baseline__accuracy": 1.01}, "metric 'accuracy' of arm 'baseline' is a proportion and must be within [0, 1]"),
        ({"intervention__accuracy": -0.01}, "metric 'accuracy' of arm 'intervention' is a proportion"),
        ({"baseline__loss": NotReached(100.0)},
         "metric 'loss' of arm 'baseline' is not a time-to-event metric, so it cannot be 'not reached'"),
        ({"intervention__count": NotReached(5.0)}, "metric 'count' of arm 'intervention' is not a time-to-event"),
        ({"baseline__steps_to_goal": NotReached(0.0)}, "NotReached budget must be finite and > 0, not 0.0"),
        ({"baseline__steps_to_goal": NotReached(-1.0)}, "NotReached budget must be finite and > 0"),
        ({"baseline__steps_to_goal": NotReached(math.inf)}, "NotReached budget must be finite and > 0, not inf"),
        ({"baseline__steps_to_goal": NotReached("soon")}, "the NotReached budget is not a number"),
    ],
)
def test_values_outside_the_metrics_scale_are_refused(change, message):
    with pytest.raises(ValueError) as excinfo:
        services.validate_results(TimedExperiment, _results(**change))
    assert message in str(excinfo.value)


def test_the_boundaries_of_each_scale_are_allowed():
    rows = services.validate_results(
        TimedExperiment,
        _results(baseline__accuracy=0.0, intervention__accuracy=1.0, baseline__loss=1e-12, baseline__count=-3.0),
    )
    values = {(row.arm, row.metric): row.value for row in rows}
    assert values["baseline", "accuracy"] == 0.0 and values["intervention", "accuracy"] == 1.0
    assert values["baseline", "count"] == -3.0  # a difference-scale value may be anything finite


@pytest.mark.django_db
def test_run_succeed_stores_the_censored_flag(user):
    with register_temporarily(TimedExperiment):
        finding = FindingFactory(created_by=user)
        experiment = services.experiment_create(finding=finding, user=user, plugin="timed", reproduce=False)
        run = services.reproduction_request(experiment=experiment, user=user, seeds=[0]).runs.get()
        token = services.run_claim(run_id=run.pk, worker_host="a")
        rows = services.validate_results(TimedExperiment, _results())
        assert services.run_succeed(run_id=run.pk, token=token, rows=rows, artifacts={}, environment={},
                                    hardware="cpu", plugin_version="1.0.0", logs="")
    stored = {(m.arm, m.metric): (m.value, m.censored) for m in Measurement.objects.filter(run=run)}
    assert stored["baseline", "steps_to_goal"] == (100.0, True)
    assert stored["intervention", "steps_to_goal"] == (40.0, False)
    assert sum(censored for _, censored in stored.values()) == 1


@pytest.mark.django_db
def test_plain_four_value_rows_are_still_stored_uncensored(user):
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(finding=finding, user=user, plugin="echo", reproduce=False)
    run = services.reproduction_request(experiment=experiment, user=user, seeds=[0]).runs.get()
    token = services.run_claim(run_id=run.pk, worker_host="a")
    rows = [(arm, metric, 1, 1.0) for arm in ("baseline", "intervention") for metric in ("risk", "skill", "width")]
    assert services.run_succeed(run_id=run.pk, token=token, rows=rows, artifacts={}, environment={}, hardware="cpu",
                                plugin_version="1.0.0", logs="")
    assert not Measurement.objects.filter(run=run, censored=True).exists()
    assert Measurement.objects.filter(run=run).count() == 6


@pytest.mark.django_db
def test_the_catalogue_records_scale_and_time_to_event():
    services.metric_catalogue_sync(TimedExperiment)
    rows = {m.name: (m.scale, m.time_to_event) for m in MetricDefinition.objects.filter(plugin="timed")}
    assert rows == {
        "steps_to_goal": ("ratio", True), "accuracy": ("proportion", False),
        "loss": ("ratio", False), "count": ("difference", False),
    }
    # a row written before scales existed (migration default) is corrected by the installed sync
    services.metric_catalogue_sync(EchoExperiment)
    declared = {(m.name, Scale(m.scale).value, m.time_to_event) for m in EchoExperiment.metrics}
    MetricDefinition.objects.filter(plugin="echo").update(scale="stale", time_to_event=True)
    services.metric_catalogue_sync_installed()
    assert set(MetricDefinition.objects.filter(plugin="echo").values_list("name", "scale", "time_to_event")) == declared
