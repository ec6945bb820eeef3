"""Built-in plugin: sparse autoencoders take features out of superposition (Sharkey et al. 2022)."""

from typing import Any

from plugins.sae.experiment import SparseAutoencoderExperiment, SparseAutoencoderParams

EXAMPLE_FINDING: dict[str, Any] = {
    "title": "An L1 penalty lets a sparse autoencoder recover features from superposition, at a reconstruction cost",
    "summary": (
        "Sharkey, Braun & Millidge (2022) train a one-layer ReLU autoencoder with unit-norm decoder "
        "columns on synthetic data in which many ground-truth features are superposed in fewer "
        "dimensions. With an L1 penalty on the latents, the learned dictionary matches the true "
        "features almost exactly (mean max cosine similarity, MMCS, about 0.99); without it the "
        "overcomplete autoencoder reconstructs the data perfectly but its dictionary is no closer to "
        "the true features than a random one.\n\n"
        "The price is reconstruction quality: the fraction of variance unexplained (FVU) rises, and the "
        "number of active latents per sample falls toward the number of active true features."
    ),
    "kind": "observation",
    "tags": ["sparse-autoencoders", "superposition", "dictionary-learning", "toy-model"],
    "references": [
        "https://www.alignmentforum.org/posts/z6QQJbtpkEAX3Aojj/interim-research-report-taking-features-out-of-superposition",
    ],
    "params": {},
    "seeds": 3,
    "claims": [
        {
            "metric": "mmcs",
            "direction": "increase",
            "min_relative_effect": 0.5,
            "threshold_unit": "absolute",
            "statement": "The L1 penalty raises the mean max cosine similarity between the dictionary and the "
            "true features by at least 0.5 (measured: about 0.38 to 0.99).",
        },
        {
            "metric": "fvu",
            "direction": "increase",
            "min_relative_effect": 0.5,
            "statement": "It costs reconstruction: the fraction of variance unexplained rises by at least 50% "
            "(measured: about 0.0002 to 0.067).",
        },
        {
            "metric": "l0",
            "direction": "decrease",
            "min_relative_effect": 100,
            "threshold_unit": "absolute",
            "statement": "The L1 penalty cuts the active latents per sample by at least 100 (measured: about "
            "226 to 17 of 256).",
        },
    ],
}

__all__ = ["EXAMPLE_FINDING", "SparseAutoencoderExperiment", "SparseAutoencoderParams"]
