"""Built-in plugin: TopK sparse autoencoders against L1 at matched L0 (Gao et al. 2024)."""

from typing import Any

from plugins.topk_sae.experiment import TopKSaeParams, TopKSparseAutoencoderExperiment

EXAMPLE_FINDING: dict[str, Any] = {
    "title": "A TopK activation reconstructs better than an L1 penalty at the same sparsity",
    "summary": (
        "Gao et al. ([Scaling and evaluating sparse autoencoders](https://arxiv.org/abs/2406.04093), "
        "2024) replace the L1 penalty of sparse autoencoders by a TopK activation: the sparsity L0 is "
        "set directly, the L1 penalty's shrinkage of every active latent disappears, and the "
        "reconstruction at a given L0 improves.\n\n"
        "Reproduction on the sae plugin's synthetic data (128 true features superposed in 64 "
        "dimensions, about 5 active per sample): the L1 SAE (coefficient 0.1) is trained first and the "
        "TopK SAE's k is set to its achieved L0 (about 16). TopK leaves less variance unexplained "
        "(seed 0: 0.066 to 0.049). It does not recover the true features better at this L0: the mean "
        "max cosine similarity falls slightly (seed 0: 0.99 to 0.95), and over a third of its latents "
        "die, since the paper's AuxK loss is not used. The pre-registered recovery claim is the one "
        "the issue asked for, kept although the first seed already disagrees with it."
    ),
    "kind": "fix",
    "tags": ["sparse-autoencoders", "topk", "superposition", "dictionary-learning", "toy-model"],
    "references": ["arXiv:2406.04093"],
    "params": {},
    "seeds": 5,
    "claims": [
        {
            "metric": "fvu",
            "direction": "decrease",
            "min_relative_effect": 0.1,
            "statement": "At matched L0, TopK lowers the fraction of variance unexplained by at least 10% "
            "(measured on seed 0: 0.066 to 0.049, -25%).",
        },
        {
            "metric": "mmcs",
            "direction": "non_inferior",
            "margin": 0.02,
            "threshold_unit": "absolute",
            "statement": "At matched L0, TopK recovers the true features about as well: MMCS not more than "
            "2 points lower (measured on seed 0: 0.99 to 0.95, so likely refuted here).",
        },
    ],
}

__all__ = ["EXAMPLE_FINDING", "TopKSaeParams", "TopKSparseAutoencoderExperiment"]
