"""Data shaping for the dashboard that needs no database."""

from __future__ import annotations

import pytest

from registry.dashboard import selectors


def test_schema_fields_from_a_pydantic_schema():
    from tests.fakes.plugins import EchoExperiment

    fields = {f["name"]: f for f in selectors.schema_fields(EchoExperiment.params_schema())}
    assert list(fields) == ["baseline", "effect", "noise", "sleep_s"]
    assert fields["baseline"]["type"] == "number" and fields["baseline"]["default"] == "1.0"
    assert fields["sleep_s"]["constraints"] == "≥ 0.0, ≤ 120.0"
    assert fields["effect"]["description"] == "Added to it in the intervention arm."


def test_schema_fields_types_refs_and_required():
    schema = {
        "type": "object",
        "required": ["mode"],
        "$defs": {"Mode": {"enum": ["a", "b"], "type": "string"}},
        "properties": {
            "mode": {"$ref": "#/$defs/Mode"},
            "sizes": {"type": "array", "items": {"type": "integer"}, "maxItems": 4},
            "name": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "free": {},
        },
    }
    fields = {f["name"]: f for f in selectors.schema_fields(schema)}
    assert fields["mode"]["type"] == 'one of "a", "b"' and fields["mode"]["default"] == "required"
    assert fields["sizes"]["type"] == "array of integer" and fields["sizes"]["constraints"] == "items ≤ 4"
    assert fields["name"]["type"] == "string or null" and fields["name"]["default"] == "null"
    assert fields["free"]["type"] == "any" and fields["free"]["default"] == "—"
    assert selectors.schema_fields(None) == []


@pytest.mark.parametrize(
    ("reference", "href"),
    [
        ("https://distill.pub/2016/deconv-checkerboard/", "https://distill.pub/2016/deconv-checkerboard/"),
        ("doi:10.23915/distill.00003", "https://doi.org/10.23915/distill.00003"),
        ("10.1000/xyz", "https://doi.org/10.1000/xyz"),
        ("arXiv:1603.07285", "https://arxiv.org/abs/1603.07285"),
        ("2301.00001v2", "https://arxiv.org/abs/2301.00001v2"),
        ("javascript:alert(1)", None),
        ("Olah et al. 2017", None),
    ],
)
def test_reference_link(reference, href):
    assert selectors.reference_link(reference) == {"text": reference, "href": href}


def test_xrisk_items_known_fields_first_and_readable():
    items = selectors.xrisk_items({"notes": "n", "dual_use": True, "extra_field": [1], "hazards": ""})
    assert items == [
        {"label": "Dual use", "value": "yes"},
        {"label": "Notes", "value": "n"},
        {"label": "Extra field", "value": "[1]"},
    ]
    assert selectors.xrisk_items(None) == [] and selectors.xrisk_items("text") == []


@pytest.mark.parametrize(
    ("claim", "higher_is_better", "expected", "text"),
    [
        ({"direction": "decrease", "min_relative_effect": 0.9}, False, -0.9, "decreases by at least 90%"),
        ({"direction": "increase", "min_relative_effect": 0.1}, True, 0.1, "increases by at least 10%"),
        ({"direction": "non_inferior", "margin": 0.05}, True, -0.05, "not worse by more than 5%"),
        ({"direction": "non_inferior", "margin": 0.05}, False, 0.05, "not worse by more than 5%"),
        ({"direction": "non_inferior", "margin": 0.05}, None, None, "not worse by more than 5%"),
    ],
)
def test_claim_reference_and_expectation(claim, higher_is_better, expected, text):
    reference = selectors.claim_reference(claim, higher_is_better)
    assert reference == (pytest.approx(expected) if expected is not None else None)
    assert selectors.claim_expectation(claim) == text


def test_effect_view_falls_back_to_the_absolute_difference():
    view = selectors.effect_view(
        {"relative_change": None, "mean_difference": 0.25, "ci_low": 0.1, "ci_high": 0.4, "n": 3, "p_value": 0.01},
        label="x",
        reference=-0.9,
    )
    assert view["scale"] == "absolute" and view["text"] == "0.25" and view["interval_text"] == "0.1 to 0.4"
    assert "chart__reference" not in view["svg"]
    assert selectors.effect_view(None, label="x") is None


def test_lean_badge_only_with_measured_scores():
    assert selectors.lean_badge(None) is None
    assert selectors.lean_badge({"lean": "neither", "axis_scores": {"safety": None, "capability": None}}) is None
    badge = selectors.lean_badge({"lean": "dual", "axis_scores": {"safety": {"score": 1}, "capability": None}})
    assert badge == {"value": "dual", "label": "Safety and capability"}
