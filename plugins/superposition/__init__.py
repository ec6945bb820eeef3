"""Built-in plugin: toy models of superposition (Elhage et al., 2022)."""

from typing import Any

from plugins.superposition.experiment import SuperpositionExperiment, SuperpositionParams

__all__ = ["EXAMPLE_FINDING", "SuperpositionExperiment", "SuperpositionParams"]

EXAMPLE_FINDING: dict[str, Any] = {
    "title": "Sparse features are stored in superposition, at the cost of clean feature directions",
    "summary": (
        "Elhage et al. ([Toy Models of Superposition](https://transformer-circuits.pub/2022/toy_model/"
        "index.html), 2022) show that a small ReLU model x' = ReLU(W^T W x + b) with 20 features "
        "and 5 hidden dimensions keeps only the 5 most important features, orthogonally, when "
        "inputs are dense, but packs many more features into the same 5 dimensions when they are "
        "sparse, as non-orthogonal, interfering directions (superposition); five equal features "
        "in two dimensions then form a regular pentagon.\n\n"
        "Reproduction: at sparsity 0.99 the model represents 11-12 features instead of 5, and "
        "every represented feature shares its direction with others, so none can be read off by "
        "a single clean projection: a direct obstacle to interpretability."
    ),
    "kind": "theory",
    "tags": ["superposition", "toy-model", "features", "polysemanticity"],
    "references": [
        "https://transformer-circuits.pub/2022/toy_model/index.html",
        "arXiv:2209.10652",
    ],
    "params": {},
    # Monosemanticity falls 1 -> 0 on every seed: a zero-variance effect, which the exact sign test
    # can confirm only from 7 seeds with two claims (Bonferroni 97.5%).
    "seeds": 7,
    "claims": [
        {
            "metric": "features_represented",
            "direction": "increase",
            "min_relative_effect": 3,
            "threshold_unit": "absolute",
            "statement": "Sparse inputs make the model represent at least 3 more features (measured: 5 to 11-12 of "
            "20, in 5 dimensions).",
        },
        {
            "metric": "monosemanticity",
            "direction": "decrease",
            "min_relative_effect": 0.5,
            "threshold_unit": "absolute",
            "statement": "The share of represented features that own a direction falls by at least 50 points: "
            "they go into superposition (measured: 100% to 0%).",
        },
    ],
}
