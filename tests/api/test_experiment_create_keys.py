"""POST /findings/{id}/experiments/: ``preset`` expands to the plugin's preset (explicit params
override it), unknown keys are a 400 naming them, and a plugin's ``recommended_seeds`` is the
default seed count."""

from __future__ import annotations

import json

import pytest
from interp_registry.sdk import Params
from pydantic import Field

from plugins.registry import register_temporarily
from registry.reproductions.models import Experiment, Reproduction
from tests.api.helpers import FINDINGS, assert_error, counts
from tests.fakes.plugins import EchoExperiment

pytestmark = pytest.mark.django_db


class PresetParams(Params):
    baseline: float = Field(1.0, description="Value of the safety metric in the baseline arm.")
    effect: float = Field(-0.5, description="Added to it in the intervention arm.")
    noise: float = Field(0.0, ge=0.0, description="Seed-dependent spread.")
    sleep_s: float = Field(0.0, ge=0.0, le=120.0, description="Seconds to work.")


class PresetEcho(EchoExperiment):
    """Echo with presets that set parameters, and a recommended seed count."""

    name = "preset_echo"
    Params = PresetParams
    presets = {"tiny": {"effect": -0.1}, "big": {"effect": -2.0, "noise": 0.5}}
    recommended_seeds = 5


@pytest.fixture
def preset_plugin():
    with register_temporarily(PresetEcho) as plugin:
        yield plugin


def _url(finding) -> str:
    return f"{FINDINGS}{finding.pk}/experiments/"


def test_preset_expands_and_params_override_it(api, finding, preset_plugin):
    response = api.post(_url(finding), {"plugin": "preset_echo", "preset": "big", "params": {"noise": 0.1},
                                        "reproduce": False}, format="json")
    assert response.status_code == 201, response.json()
    assert "preset" not in response.json()
    assert response.json()["params"] == {"baseline": 1.0, "effect": -2.0, "noise": 0.1, "sleep_s": 0.0}
    response = api.post(_url(finding), {"plugin": "preset_echo", "preset": "tiny", "reproduce": False},
                        format="json")
    assert response.status_code == 201, response.json()
    assert Experiment.objects.get(pk=response.json()["id"]).params["effect"] == -0.1


def test_preset_by_who_may_add_experiments(anon, client_for, other_user, api, finding, preset_plugin):
    body = {"plugin": "preset_echo", "preset": "big", "reproduce": False}
    before = counts()
    assert anon.post(_url(finding), body, format="json").status_code in (401, 403)
    assert_error(client_for(other_user).post(_url(finding), body, format="json"), 403)
    assert counts() == before
    response = api.post(_url(finding), body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["params"]["effect"] == -2.0


@pytest.mark.parametrize("preset", ["huge", "", 3, None, ["tiny"]])
def test_unknown_or_malformed_preset_is_a_400_naming_it(api, finding, preset_plugin, preset):
    before = counts()
    body = assert_error(api.post(_url(finding), {"plugin": "preset_echo", "preset": preset}, format="json"),
                        400, "preset")
    if preset == "huge":
        assert "big" in body["errors"]["preset"][0] and "tiny" in body["errors"]["preset"][0]
    assert counts() == before


def test_a_preset_does_not_hide_bad_params(api, finding, preset_plugin):
    before = counts()
    assert_error(api.post(_url(finding), {"plugin": "preset_echo", "preset": "big", "params": {"noise": -1}},
                          format="json"), 400, "params")
    assert_error(api.post(_url(finding), {"plugin": "preset_echo", "preset": "big", "params": "x"},
                          format="json"), 400, "params")
    assert counts() == before


def test_unknown_keys_are_a_400_naming_each(api, finding):
    before = counts()
    body = assert_error(
        api.post(_url(finding), {"plugin": "echo", "prest": "tiny", "n_seeds": 3}, format="json"), 400
    )
    assert set(body["errors"]) == {"prest", "n_seeds"}
    assert "unknown field" in body["errors"]["prest"][0] and "preset" in body["errors"]["prest"][0]
    # a form post too
    assert_error(api.post(_url(finding), {"plugin": "echo", "seeds": "3"}), 400, "seeds")
    assert counts() == before


def test_a_stranger_gets_a_403_whatever_the_body(client_for, other_user, anon, finding):
    """The permission is checked before the body: a stranger learns nothing from a 400."""
    before = counts()
    for body in ({"plugin": "echo", "bogus": 1}, {"plugin": "echo", "preset": "huge"}):
        assert anon.post(_url(finding), body, format="json").status_code in (401, 403)
        assert_error(client_for(other_user).post(_url(finding), body, format="json"), 403)
    assert counts() == before


def test_read_only_fields_are_still_accepted_and_ignored(api, finding):
    """What the API returns may be sent back (a client copying an experiment): its read-only
    fields are known, not unknown."""
    response = api.post(_url(finding), {"plugin": "echo", "reproduce": False, "id": 999, "reproductions": [1]},
                        format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["id"] != 999 and response.json()["reproductions"] == []


def test_recommended_seeds_is_the_default(api, anon, finding, preset_plugin):
    response = api.post(_url(finding), {"plugin": "preset_echo"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["default_seeds"] == 5
    reproduction = Reproduction.objects.get(pk=response.json()["reproductions"][0])
    assert reproduction.seeds == [0, 1, 2, 3, 4]
    # explicit wins; a plugin recommending nothing: 3
    response = api.post(_url(finding), {"plugin": "preset_echo", "default_seeds": 2, "reproduce": False},
                        format="json")
    assert response.json()["default_seeds"] == 2
    response = api.post(_url(finding), {"plugin": "echo", "reproduce": False}, format="json")
    assert response.json()["default_seeds"] == 3
    # a reproduction requested without seeds uses the experiment's default
    experiment = Experiment.objects.filter(plugin="preset_echo").first()
    response = api.post(f"/api/v1/experiments/{experiment.pk}/reproductions/", {}, format="json")
    assert response.status_code == 202, response.json()
    assert response.json()["seeds"] == [0, 1, 2, 3, 4]
    # and the plugins API says so
    plugins = {p["name"]: p for p in anon.get("/api/v1/plugins/").json()}
    assert plugins["preset_echo"]["recommended_seeds"] == 5
    assert plugins["echo"]["recommended_seeds"] is None
    assert anon.get("/api/v1/plugins/preset_echo/").json()["recommended_seeds"] == 5


def test_recommended_seeds_is_capped_by_the_registry(api, finding, preset_plugin, settings):
    settings.MAX_SEEDS_PER_REPRODUCTION = 4
    response = api.post(_url(finding), {"plugin": "preset_echo", "reproduce": False}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["default_seeds"] == 4


@pytest.mark.parametrize("params", [[], 0, False, "", [1]])
@pytest.mark.parametrize("preset", [None, "big"])
def test_params_that_are_not_an_object_are_a_400_even_when_empty(api, finding, preset_plugin, params, preset):
    """An empty list, 0, false or "" is not "no params": it used to become {} (the plugin's
    defaults, the preset silently dropped) and queue runs the caller did not ask for."""
    before = counts()
    body = {"plugin": "preset_echo", "params": params, "reproduce": False}
    if preset:
        body["preset"] = preset
    assert_error(api.post(_url(finding), body, format="json"), 400, "params")
    assert counts() == before


@pytest.mark.parametrize("body", [[{"plugin": "echo"}], "echo", 3, None])
def test_a_body_that_is_not_an_object_is_a_400(api, finding, body):
    before = counts()
    response = api.post(_url(finding), json.dumps(body), content_type="application/json")
    assert response.status_code == 400, response.content
    assert counts() == before
