"""The plugin catalogue and the metric catalogue."""

from __future__ import annotations

import pytest

from plugins.registry import all_plugins
from registry.reproductions.models import MetricDefinition
from registry.reproductions.services import metric_catalogue_sync_installed
from tests.api.helpers import assert_error
from tests.fakes.plugins import EchoExperiment

pytestmark = pytest.mark.django_db


def test_plugin_list(anon):
    response = anon.get("/api/v1/plugins/")
    assert response.status_code == 200
    plugins = {p["name"]: p for p in response.json()}
    assert {"echo", "crashing"} <= set(plugins)
    echo = plugins["echo"]
    assert echo["available"] is True and echo["version"] == "1.0.0"
    assert set(echo["params_schema"]["properties"]) == {"baseline", "effect", "noise", "sleep_s"}
    assert {(m["name"], m["axis"], m["higher_is_better"]) for m in echo["metrics"]} == {
        ("risk", "safety", False), ("skill", "capability", True), ("width", "diagnostic", True)
    }
    assert echo["arms"] == ["baseline", "intervention"]
    assert echo["resources"] == {"device": "cpu", "time_limit_s": 120}
    assert {(m["name"], m["scale"], m["time_to_event"]) for m in echo["metrics"]} == {
        (m.name, m.scale.value, m.time_to_event) for m in EchoExperiment.metrics
    }
    assert {m["scale"] for m in plugins["crashing"]["metrics"]} == {"difference"}  # the SDK's default
    assert "interval" not in echo  # the registry's method, not the plugin's
    assert [m["name"] for m in plugins["crashing"]["metrics"]] == ["risk"]
    # every discovered plugin is listed, built-ins included; broken ones say why
    assert set(plugins) == set(all_plugins())
    for name, entry in all_plugins().items():
        assert plugins[name]["available"] is entry.available
        if not entry.available:
            assert plugins[name]["error"]
    for builtin in ("checkerboard", "sae", "induction", "grokking", "superposition", "shortcut"):
        # every built-in loads: one that fails to import is a failure here, not a silent pass
        assert builtin in plugins, builtin
        listed, entry = plugins[builtin], all_plugins()[builtin]
        assert listed["available"] is True and entry.available, (builtin, listed.get("error"), entry.error)
        declared = entry.experiment
        assert listed["version"] == declared.version, builtin
        assert listed["arms"] == list(declared.arms), builtin
        assert listed["description"], builtin
        assert "tiny" in listed["presets"], builtin
        assert set(listed["params_schema"]["properties"]) == set(declared.Params.model_fields), builtin
        assert [(m["name"], m["axis"], m["higher_is_better"], m["scale"], m["time_to_event"])
                for m in listed["metrics"]] == [
            (m.name, m.axis.value, m.higher_is_better, m.scale.value, m.time_to_event) for m in declared.metrics
        ], builtin
        assert listed["metrics"], builtin
        assert {m["axis"] for m in listed["metrics"]} <= {"safety", "capability", "diagnostic"}
        assert {m["scale"] for m in listed["metrics"]} <= {"ratio", "proportion", "difference"}
    grokking = {m["name"]: m for m in plugins["grokking"]["metrics"]}
    assert (grokking["steps_to_test_99"]["scale"], grokking["steps_to_test_99"]["time_to_event"]) == ("ratio", True)
    assert (grokking["test_accuracy"]["scale"], grokking["test_accuracy"]["time_to_event"]) == ("proportion", False)


def test_plugin_detail(anon):
    response = anon.get("/api/v1/plugins/echo/")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "echo"
    assert body["params_schema"]["properties"]["noise"]["minimum"] == 0.0
    assert body["presets"] == {"tiny": {}}
    assert "known effects" in body["description"]


def test_unknown_plugin_is_404_json(anon):
    body = assert_error(anon.get("/api/v1/plugins/no_such_plugin/"), 404)
    assert "no_such_plugin" in body["detail"]


def test_metric_list_for_a_plugin(anon):
    metric_catalogue_sync_installed()
    response = anon.get("/api/v1/metrics/", {"plugin": "echo"})
    assert response.status_code == 200
    rows = response.json()
    assert {(m["name"], m["axis"], m["higher_is_better"], m["plugin"]) for m in rows} == {
        ("risk", "safety", False, "echo"), ("skill", "capability", True, "echo"),
        ("width", "diagnostic", True, "echo"),
    }
    assert all(m["plugin_version"] == "1.0.0" and m["version"] == 1 for m in rows)
    # idempotent: asking again does not duplicate the catalogue
    anon.get("/api/v1/metrics/")
    assert MetricDefinition.objects.filter(plugin="echo").count() == 3


def test_metric_list_shows_scale_and_time_to_event(anon):
    metric_catalogue_sync_installed()
    rows = anon.get("/api/v1/metrics/", {"plugin": "grokking"}).json()
    shown = {m["name"]: (m["scale"], m["time_to_event"], m["version"]) for m in rows}
    assert shown["steps_to_test_99"] == ("ratio", True, 2)
    assert shown["fourier_sparsity"] == ("proportion", False, 1)
    checkerboard = anon.get("/api/v1/metrics/", {"plugin": "checkerboard"}).json()
    assert {m["scale"] for m in checkerboard} == {"ratio"}


def test_metric_list_by_axis(anon):
    metric_catalogue_sync_installed()
    rows = anon.get("/api/v1/metrics/", {"axis": "safety"}).json()
    assert rows and {m["axis"] for m in rows} == {"safety"}
    assert ("echo", "risk") in {(m["plugin"], m["name"]) for m in rows}
    assert anon.get("/api/v1/metrics/", {"plugin": "nothing"}).json() == []
