"""The built-ins' example claims follow the scale rules: relative thresholds only on ratio metrics
(a decrease below 100%), absolute thresholds (points as fractions) on proportions and differences,
and every claim says in words what it checks. Every metric of every built-in declares its scale."""

import importlib

import pytest
from interp_registry.sdk import Scale

BUILTINS = (
    "checkerboard", "sae", "induction", "shortcut", "grokking", "superposition", "topk_sae", "shift", "leace",
    "smeared_keys", "grokfast", "colored_digits",
)

SCALES = {
    "checkerboard": {"checkerboard_energy": "ratio", "pooled_mse": "ratio", "full_mse": "ratio",
                     "overlap_ratio": "ratio"},
    "sae": {"mmcs": "proportion", "fvu": "ratio", "l0": "difference"},
    "induction": {"induction_score": "proportion", "repeat_loss": "ratio", "repeat_accuracy": "proportion",
                  "phase_change_step": "ratio", "abruptness": "proportion", "copying_score": "proportion"},
    "shortcut": {"test_accuracy": "proportion", "worst_group_accuracy": "proportion", "train_accuracy": "proportion"},
    "colored_digits": {"test_accuracy": "proportion", "worst_group_accuracy": "proportion",
                       "train_accuracy": "proportion"},
    "grokking": {"fourier_sparsity": "proportion", "test_accuracy": "proportion", "steps_to_test_99": "ratio",
                 "steps_to_train_99": "ratio"},
    "superposition": {"monosemanticity": "proportion", "weighted_loss": "ratio", "features_represented": "difference",
                      "features_in_superposition": "difference", "pentagon": "proportion"},
    "topk_sae": {"mmcs": "proportion", "fvu": "ratio", "l0": "difference", "dead_latents": "proportion"},
    "shift": {"worst_group_accuracy": "proportion", "test_accuracy": "proportion", "train_accuracy": "proportion",
              "colour_flip_rate": "proportion"},
    "leace": {"test_accuracy": "proportion", "worst_group_accuracy": "proportion", "train_accuracy": "proportion",
              "colour_decodability": "proportion"},
    "smeared_keys": {"induction_score": "proportion", "repeat_accuracy": "proportion", "repeat_loss": "ratio"},
    "grokfast": {"steps_to_test_99": "ratio", "test_accuracy": "proportion", "restricted_loss": "ratio",
                 "excluded_loss": "ratio", "steps_to_train_99": "ratio"},
}
TIME_TO_EVENT = {
    ("grokking", "steps_to_test_99"), ("grokking", "steps_to_train_99"), ("induction", "phase_change_step"),
    ("grokfast", "steps_to_test_99"), ("grokfast", "steps_to_train_99"),
}


def _plugin(name):
    package = importlib.import_module(f"plugins.{name}")
    (experiment,) = [v for k, v in vars(package).items() if k.endswith("Experiment")]
    return package, experiment


@pytest.mark.parametrize("name", BUILTINS)
def test_every_metric_declares_its_scale(name):
    _, experiment = _plugin(name)
    assert {m.name: Scale(m.scale).value for m in experiment.metrics} == SCALES[name]
    assert {(name, m.name) for m in experiment.metrics if m.time_to_event} == {
        key for key in TIME_TO_EVENT if key[0] == name
    }


@pytest.mark.parametrize("name", BUILTINS)
def test_example_claims_use_the_threshold_their_scale_allows(name):
    package, experiment = _plugin(name)
    examples = [package.EXAMPLE_FINDING, *getattr(package, "MORE_EXAMPLE_FINDINGS", ())]
    for claim in (claim for example in examples for claim in example["claims"]):
        scale = experiment.metric(claim["metric"]).scale
        unit = claim.get("threshold_unit", "relative")
        threshold = claim["margin"] if claim["direction"] == "non_inferior" else claim["min_relative_effect"]
        assert claim.get("statement"), claim
        assert threshold > 0, claim
        if scale is Scale.RATIO:
            assert unit == "relative", claim
            assert threshold < 1, "a relative decrease of 100% or more is impossible on the ratio scale"
        else:
            assert unit == "absolute", f"{name}.{claim['metric']} is on the {scale} scale: no relative claims"
        if scale is Scale.PROPORTION:
            assert threshold < 1, "points as fractions: 0.3 = 30 points"
            assert f"{round(threshold * 100)} points" in claim["statement"] or f"{threshold:g}" in claim["statement"]


def test_examples_load_after_the_findings_they_build_on_at_any_depth():
    from registry.findings.examples import _parents_first, example_specs

    specs = [
        {"title": "grandchild", "builds_on_titles": ["child"]},
        {"title": "child", "builds_on_titles": ["root"]},
        {"title": "outside", "builds_on_titles": ["not an example"]},
        {"title": "root"},
        {"title": "loop a", "builds_on_titles": ["loop b"]},
        {"title": "loop b", "builds_on_titles": ["loop a"]},
    ]
    ordered = [spec["title"] for spec in _parents_first(specs)]
    assert sorted(ordered) == sorted(spec["title"] for spec in specs)  # nothing lost or repeated
    assert ordered.index("root") < ordered.index("child") < ordered.index("grandchild")
    assert ordered.index("outside") < ordered.index("root")  # otherwise the given order
    real = example_specs()
    seen: set[str] = set()
    for spec in real:
        assert all(t in seen for t in spec.get("builds_on_titles", ())), spec["title"]
        seen.add(spec["title"])
