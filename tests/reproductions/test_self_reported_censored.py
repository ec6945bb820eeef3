"""Self-reported runs may report a time to an event as not reached: {"censored": true, "value": budget},
only on time-to-event metrics; values outside a metric's scale are refused like the runner's."""

import pytest

from registry.events.models import Event
from registry.reproductions import services
from registry.reproductions.models import Measurement, Reproduction
from tests.factories import FindingFactory

pytestmark = pytest.mark.django_db

PARAMS = {"steps": 100, "eval_every": 25}  # grokking: its steps_to_* metrics are times to an event


@pytest.fixture
def experiment(user):
    finding = FindingFactory(created_by=user)
    return services.experiment_create(finding=finding, user=user, plugin="grokking", params=PARAMS, reproduce=False)


def _arm(**changes):
    values = {"fourier_sparsity": 0.3, "test_accuracy": 0.2, "steps_to_test_99": {"censored": True, "value": 100},
              "steps_to_train_99": 50}
    return {**values, **changes}


def _post(api, experiment, measurements):
    body = {"seed": 3, "measurements": measurements, "params": PARAMS, "hardware": "cpu"}
    return api.post(f"/api/v1/experiments/{experiment.pk}/self-reported-runs/", body, format="json")


def _nothing_stored():
    assert not Reproduction.objects.exists() and not Measurement.objects.exists()
    assert not Event.objects.filter(type="run.finished").exists()


def test_a_censored_time_to_event_is_accepted_and_stored(api, experiment):
    measurements = {"baseline": _arm(), "intervention": _arm(test_accuracy=1.0, steps_to_test_99=60)}
    response = _post(api, experiment, measurements)
    assert response.status_code == 201, response.json()
    shown = {(m["arm"], m["metric"]): (m["value"], m["censored"]) for m in response.json()["measurements"]}
    assert shown["baseline", "steps_to_test_99"] == (100.0, True)
    assert shown["intervention", "steps_to_test_99"] == (60.0, False)
    assert shown["baseline", "steps_to_train_99"] == (50.0, False)
    stored = Measurement.objects.get(arm="baseline", metric="steps_to_test_99")
    assert (stored.value, stored.censored, stored.metric_version) == (100.0, True, 2)
    assert Measurement.objects.filter(censored=True).count() == 1
    run = api.get(f"/api/v1/runs/{response.json()['id']}/").json()
    assert {m["censored"] for m in run["measurements"]} == {True, False}


@pytest.mark.parametrize(
    ("arm_values", "field", "message"),
    [
        # censored on a metric that is not a time to an event
        (_arm(test_accuracy={"censored": True, "value": 1}), "measurements.baseline.test_accuracy",
         "not a time-to-event metric"),
        # malformed censored objects
        (_arm(steps_to_test_99={"censored": False, "value": 100}), "measurements.baseline.steps_to_test_99",
         '{"censored": true, "value": <budget>}'),
        (_arm(steps_to_test_99={"censored": True}), "measurements.baseline.steps_to_test_99", "numeric budget"),
        (_arm(steps_to_test_99={"censored": True, "value": "100"}), "measurements.baseline.steps_to_test_99",
         "numeric budget"),
        (_arm(steps_to_test_99={"censored": True, "value": 100, "why": "x"}),
         "measurements.baseline.steps_to_test_99", "numeric budget"),
        # a budget that is no positive time
        (_arm(steps_to_test_99={"censored": True, "value": 0}), "measurements",
         "NotReached budget must be finite and > 0"),
        # values outside the metric's scale
        (_arm(test_accuracy=1.5), "measurements", "'test_accuracy' of arm 'baseline' is a proportion"),
        (_arm(steps_to_train_99=0), "measurements", "'steps_to_train_99' of arm 'baseline' is on the ratio scale"),
        (_arm(steps_to_train_99="soon"), "measurements.baseline.steps_to_train_99",
         'must be a number or {"censored": true'),
    ],
)
def test_censored_and_out_of_scale_values_are_refused(api, experiment, arm_values, field, message):
    response = _post(api, experiment, {"baseline": arm_values, "intervention": _arm()})
    assert response.status_code == 400, response.json()
    body = response.json()
    assert field in body["errors"], body
    assert message in body["detail"], body
    _nothing_stored()
