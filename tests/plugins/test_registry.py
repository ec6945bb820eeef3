"""Plugin discovery: entry points and PLUGINS_EXTRA, broken plugins listed not fatal, allow-list."""

import pytest
from django.test import override_settings
from interp_registry.sdk import API_VERSION, Axis, Experiment, Metric, Scale

from plugins import registry
from tests.fakes.plugins import (
    EchoExperiment,
    OldIntervalExperiment,
    UnknownScaleExperiment,
    WrongArmsExperiment,
)


@pytest.fixture(autouse=True)
def fresh_cache():
    registry.reset_cache()
    yield
    registry.reset_cache()


BROKEN = [
    "echo=tests.fakes.plugins:EchoExperiment",
    "broken=tests.fakes.does_not_exist:Nothing",
    "no_metrics=tests.fakes.plugins:NoMetricsExperiment",
    "future_api=tests.fakes.plugins:FutureApiExperiment",
    "misnamed=tests.fakes.plugins:EchoExperiment",
    "not_a_class=tests.fakes.plugins:BROKEN_IMPORT",
    "malformed=tests.fakes.plugins:MalformedExperiment",
]


@override_settings(PLUGINS_EXTRA=BROKEN)
def test_broken_plugins_are_listed_as_unavailable_with_a_reason():
    plugins = registry.all_plugins(refresh=True)
    assert plugins["echo"].available
    assert "import failed" in plugins["broken"].error
    assert "declares no metrics" in plugins["no_metrics"].error
    assert f"this registry provides {API_VERSION}" in plugins["future_api"].error
    assert "names a plugin called 'echo'" in plugins["misnamed"].error
    assert "not a subclass" in plugins["not_a_class"].error
    assert "malformed declaration" in plugins["malformed"].error
    for name in ("broken", "no_metrics", "future_api"):
        with pytest.raises(registry.PluginUnavailable):
            registry.get_plugin(name)
    with pytest.raises(registry.PluginNotFound):
        registry.get_plugin("nothing-here")


@override_settings(PLUGINS_EXTRA=BROKEN)
def test_the_api_still_serves_with_a_broken_plugin(db, anon):
    registry.reset_cache()
    response = anon.get("/api/v1/plugins/")
    assert response.status_code == 200
    listed = {p["name"]: p for p in response.json()}
    assert listed["broken"]["available"] is False and "import failed" in listed["broken"]["error"]
    assert listed["echo"]["available"] is True


def test_builtins_are_discovered_through_entry_points():
    plugins = registry.all_plugins(refresh=True)
    for name in ("checkerboard", "sae", "induction", "shortcut", "grokking", "superposition"):
        assert name in plugins
        assert plugins[name].source.startswith(f"plugins.{name}:")


@override_settings(PLUGINS_ALLOWED=["echo"])
def test_allow_list_disables_other_plugins():
    plugins = registry.all_plugins(refresh=True)
    assert plugins["echo"].available
    assert plugins["crashing"].error == "not in the PLUGINS_ALLOWED list"
    assert plugins["checkerboard"].error == "not in the PLUGINS_ALLOWED list"


def test_register_temporarily():
    class Temporary(Experiment):
        name = "temporary"
        version = "0.1"
        metrics = (Metric("m", Axis.SAFETY, higher_is_better=True),)

    with registry.register_temporarily(Temporary):
        assert registry.get_plugin("temporary") is Temporary
    with pytest.raises(registry.PluginNotFound):
        registry.get_plugin("temporary")


def test_declaration_errors_catch_bad_metadata():
    class BadArms(EchoExperiment):
        arms = ("baseline", "baseline")

    class BadDevice(EchoExperiment):
        from interp_registry.sdk import Resources

        resources = Resources(device="tpu")

    assert "arms must be exactly those" in registry.declaration_errors(BadArms)[0]
    assert "resources.device" in registry.declaration_errors(BadDevice)[0]
    assert registry.declaration_errors(EchoExperiment) == []


def test_arms_must_be_exactly_baseline_and_intervention():
    for arms in (("control", "treatment"), ("intervention", "baseline"), ("baseline", "intervention", "other"),
                 ("baseline",)):
        class Arms(EchoExperiment):
            pass

        Arms.arms = arms
        (error,) = registry.declaration_errors(Arms)
        assert f"declares arms {arms!r}" in error
        assert "('baseline', 'intervention')" in error and "compares exactly two arms" in error
    assert registry.declaration_errors(WrongArmsExperiment) != []


def test_a_time_to_event_metric_must_be_on_the_ratio_scale():
    for scale in (Scale.PROPORTION, Scale.DIFFERENCE):
        class Timed(EchoExperiment):
            metrics = (Metric("t", Axis.SAFETY, higher_is_better=False, scale=scale, time_to_event=True),)

        (error,) = registry.declaration_errors(Timed)
        assert "metric 't' is a time to an event, so its scale must be 'ratio'" in error
        assert f"not {scale.value!r}" in error

    class Fine(EchoExperiment):
        metrics = (Metric("t", Axis.SAFETY, higher_is_better=False, scale=Scale.RATIO, time_to_event=True),)

    assert registry.declaration_errors(Fine) == []


def test_an_unknown_scale_is_refused():
    (error,) = registry.declaration_errors(UnknownScaleExperiment)
    assert "metric 'risk' has an unknown scale 'log'" in error and "'ratio'" in error


def test_an_interval_left_on_an_old_plugin_is_ignored():
    assert registry.declaration_errors(OldIntervalExperiment) == []
    assert not hasattr(Experiment, "interval")


@override_settings(PLUGINS_EXTRA=[
    "echo=tests.fakes.plugins:EchoExperiment",
    "wrong_arms=tests.fakes.plugins:WrongArmsExperiment",
    "censored_proportion=tests.fakes.plugins:CensoredProportionExperiment",
    "unknown_scale=tests.fakes.plugins:UnknownScaleExperiment",
    "old_interval=tests.fakes.plugins:OldIntervalExperiment",
])
def test_discovery_skips_plugins_with_bad_arms_or_scales():
    plugins = registry.all_plugins(refresh=True)
    assert plugins["echo"].available and plugins["old_interval"].available
    assert "arms must be exactly those" in plugins["wrong_arms"].error
    assert "scale must be 'ratio'" in plugins["censored_proportion"].error
    assert "unknown scale 'log'" in plugins["unknown_scale"].error
    for name in ("wrong_arms", "censored_proportion", "unknown_scale"):
        assert not plugins[name].available
        with pytest.raises(registry.PluginUnavailable, match=name):
            registry.get_plugin(name)
