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


def _effect(**fields):
    base = {
        "n": 5, "scale": "ratio", "effect": -0.69, "effect_ci_low": -0.8, "effect_ci_high": -0.6,
        "effect_unit": "log_ratio", "mean_difference": -0.5, "relative_change": -0.5, "relative_ci_low": -0.55,
        "relative_ci_high": -0.45, "p_value": 0.001, "deterministic": False, "censored": None, "warnings": [],
    }
    return {**base, **fields}


def test_effect_view_of_a_ratio_metric_is_a_relative_change_from_the_log_ratio():
    view = selectors.effect_view(_effect(), label="risk", reference=-0.3)
    assert view["mode"] == "relative" and view["text"] == "-50%" and view["interval_text"] == "-55% to -45%"
    assert "chart__reference" in view["svg"] and view["bound"] == "exact" and not view["deterministic"]


def test_effect_view_of_a_proportion_is_in_points():
    effect = _effect(scale="proportion", effect_unit="points", effect=0.3, effect_ci_low=0.25, effect_ci_high=0.35,
                     relative_change=None, relative_ci_low=None, relative_ci_high=None)
    view = selectors.effect_view(effect, label="accuracy")
    assert view["mode"] == "points" and view["text"] == "+30 pt" and view["interval_text"] == "+25 pt to +35 pt"
    # a relative claim on it falls back to points (no relative change near 0), without the claimed mark
    view = selectors.effect_view(effect, label="accuracy", reference=0.5, mode="relative")
    assert view["mode"] == "points" and "chart__reference" not in view["svg"]


def test_effect_view_of_a_difference_and_of_an_older_cache_entry():
    view = selectors.effect_view(
        _effect(scale="difference", effect_unit="difference", effect=2.0, effect_ci_low=1.0, effect_ci_high=3.0,
                relative_change=None), label="count")
    assert view["mode"] == "difference" and view["text"] == "2" and view["interval_text"] == "1 to 3"
    # an entry cached before effects v2 (hedges_g, ci_low/ci_high, no effect_unit) still renders
    old = {"relative_change": None, "mean_difference": 0.25, "ci_low": 0.1, "ci_high": 0.4, "hedges_g": 3.0, "n": 3}
    view = selectors.effect_view(old, label="x")
    assert view["mode"] == "difference" and view["text"] == "0.25" and view["interval_text"] is None
    assert selectors.effect_view(None, label="x") is None


@pytest.mark.parametrize(
    ("bound", "low", "high", "text"),
    [("upper", None, -0.4, "at most -40%"), ("lower", 0.2, None, "at least +20%"), ("none", None, None,
                                                                                     "no valid interval")],
)
def test_effect_view_of_censored_effects_is_one_sided(bound, low, high, text):
    censored = {"reached_baseline": 0, "reached_intervention": 3, "n": 3, "earlier": 3, "later": 0,
                "undecidable": 0, "sign_test_p": 0.25, "bound": bound}
    view = selectors.effect_view(
        _effect(n=3, relative_ci_low=low, relative_ci_high=high, censored=censored,
                warnings=["censored: 0 of 3 baseline ...", "only the upper end of the interval is valid"]),
        label="steps",
    )
    assert view["text"] == text and view["interval_text"] is None
    assert view["reached"] == "reached 0/3 → 3/3" and view["p_method"] == "sign test"
    assert view["warnings"] == []  # shown as notes instead


def test_effect_view_flags_a_deterministic_effect():
    view = selectors.effect_view(_effect(deterministic=True, p_value=None, relative_ci_low=-0.5,
                                         relative_ci_high=-0.5), label="risk")
    assert view["deterministic"] and view["p_value"] is None and view["interval_text"] == "-50% to -50%"


@pytest.mark.parametrize(
    ("entry", "verdict", "label", "css"),
    [
        ({"has_data": False, "effect": None}, "inconclusive", "no data yet", "none"),
        ({}, "inconclusive", "no data yet", "none"),
        ({"has_data": True, "effect": {"n": 2}}, "inconclusive", "not enough seeds (min 3)", "seeds"),
        ({"has_data": True, "effect": {"n": 5}, "experiments_disagree": True}, "inconclusive",
         "experiments disagree", "disagree"),
        ({"has_data": True, "effect": {"n": 5}}, "inconclusive", "inconclusive", "inconclusive"),
        ({"has_data": True, "effect": {"n": 5}}, "confirmed", "confirmed", "confirmed"),
    ],
)
def test_verdict_state(entry, verdict, label, css):
    assert selectors._verdict_state(entry, verdict, 3) == (label, css)


@pytest.mark.parametrize(
    ("claim", "scale", "text"),
    [
        ({"direction": "increase", "min_relative_effect": 0.3, "threshold_unit": "absolute"}, "proportion",
         "increases by at least 30 points"),
        ({"direction": "decrease", "min_relative_effect": 2.0, "threshold_unit": "absolute"}, "difference",
         "decreases by at least 2"),
        ({"direction": "non_inferior", "margin": 0.05, "threshold_unit": "absolute"}, "proportion",
         "not worse by more than 5 points"),
        ({"direction": "decrease", "min_relative_effect": 0.9, "threshold_unit": "relative"}, "ratio",
         "decreases by at least 90%"),
    ],
)
def test_claim_expectation_in_the_claims_unit(claim, scale, text):
    assert selectors.claim_expectation(claim, scale) == text


def test_axis_view_in_log_units_with_its_factor():
    view = selectors.axis_view("safety", {"score": 0.6931, "ci_low": 0.5, "ci_high": 0.9, "unit": "log",
                                          "factor": 2.0, "n_seeds": 5, "n_metrics": 1,
                                          "components": {"risk": 0.6931}, "deterministic": False})
    assert view["text"] == "+0.69" and view["factor"] == "×2.0 better" and view["interval_text"] == "+0.50 to +0.90"
    assert view["log_units"] and view["components"] == [{"metric": "risk", "text": "+0.69", "factor": "×2.0 better"}]
    worse = selectors.axis_view("capability", {"score": -2.3026, "ci_low": None, "ci_high": None, "unit": "log"})
    assert worse["factor"] == "×10 worse" and worse["interval_text"] is None
    assert selectors.axis_view("safety", None) == {"axis": "safety", "score": None}


def test_progress_rows_from_per_point_residuals():
    findings = [
        {"finding": 1, "title": "A", "safety": {"score": 1.0}, "capability": {"score": 0.0}},
        {"finding": 2, "title": "B", "safety": None, "capability": {"score": 1.0}},
        {"finding": 3, "title": "C", "safety": {"score": -1.0}, "capability": {"score": 2.0}},
    ]
    progress = {"slope": 0.1, "intercept": 0.0, "points": [
        {"index": 0, "residual": 1.0, "ci_low": 0.2, "ci_high": 1.8},
        {"index": 1, "residual": -1.2, "ci_low": None, "ci_high": None},
    ]}
    rows = selectors.progress_rows(progress, findings)
    assert [(r["finding"], r["residual"], r["reading"]) for r in rows] == [
        (1, "+1.00", "above the trend"), (3, "-1.20", "no interval")
    ]
    assert rows[0]["interval"] == "+0.20 to +1.80" and rows[0]["href"] == "/findings/1/"


def test_params_summary():
    assert selectors.params_summary({"steps": 2000, "lr": 0.001}) == "lr=0.001, steps=2000"
    assert selectors.params_summary({}) == "default parameters"
    assert selectors.params_summary({"x": "y" * 500}).endswith("…")


def test_lean_badge_only_with_measured_scores():
    assert selectors.lean_badge(None) is None
    assert selectors.lean_badge({"lean": "neither", "axis_scores": {"safety": None, "capability": None}}) is None
    badge = selectors.lean_badge({"lean": "dual", "axis_scores": {"safety": {"score": 1}, "capability": None}})
    assert badge == {"value": "dual", "label": "Safety and capability"}
