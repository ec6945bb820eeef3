"""Built-in plugin: weight decay makes a network grok modular addition (Power et al. 2022; Nanda et al. 2023)."""

from typing import Any

from plugins.grokking.experiment import GrokkingExperiment, GrokkingParams

EXAMPLE_FINDING: dict[str, Any] = {
    "title": "Weight decay makes a memorising network grok modular addition with a sparse Fourier algorithm",
    "summary": (
        "Power et al. (2022) found that networks trained on small algorithmic datasets such as "
        "(a + b) mod p memorise the training set quickly and then, long afterwards, suddenly "
        "generalise (*grokking*), and that weight decay is the intervention that helps most. "
        "Nanda et al. (2023) reverse-engineered the grokked network: it embeds the residues on a few "
        "key Fourier frequencies and computes the sum with trigonometric identities.\n\n"
        "Here a one-hidden-layer ReLU MLP on learned embeddings, trained full-batch with AdamW on half "
        "of the pairs for p = 59, memorises the training set within about 60 steps in both arms. With "
        "weight decay 1 test accuracy reaches 99% around step 1,000, over ten times later, and the embedding "
        "concentrates on a few Fourier frequencies; without weight decay test accuracy stays at chance "
        "for the whole budget. Interpretability and capability improve together."
    ),
    "kind": "theory",
    "tags": ["grokking", "weight-decay", "fourier", "modular-arithmetic", "generalisation", "toy-model"],
    "references": ["arXiv:2201.02177", "arXiv:2301.05217"],
    "params": {},
    # 3 seeds leave the censored steps-to-99% claim and the Fourier claim undecided; test accuracy
    # saturates (0 -> 1 on every seed), so the capability score is constant and needs 6 (the sign test).
    "seeds": 6,
    "claims": [
        {
            "metric": "fourier_sparsity",
            "direction": "increase",
            "min_relative_effect": 0.15,
            "threshold_unit": "absolute",
            "statement": "Weight decay raises the top-5 Fourier frequencies' share of the embedding's power "
            "by at least 15 points (measured on 5 seeds: 24% to 65% on average, 58-74% per seed).",
        },
        {
            "metric": "test_accuracy",
            "direction": "increase",
            "min_relative_effect": 0.8,
            "threshold_unit": "absolute",
            "statement": "Weight decay raises the final test accuracy by at least 80 points (measured: chance, "
            "about 0.2%, to 100%).",
        },
        {
            "metric": "steps_to_test_99",
            "direction": "decrease",
            "min_relative_effect": 0.2,
            "statement": "With weight decay test accuracy reaches 99% at least 20% sooner; without it, it is not "
            "reached within the 2,000-step budget (measured on 5 seeds: steps 820-1,140 with weight decay, "
            "not reached without).",
        },
    ],
}

__all__ = ["EXAMPLE_FINDING", "GrokkingExperiment", "GrokkingParams"]
