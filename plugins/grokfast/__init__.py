"""Built-in plugin: Grokfast-EMA against weight decay alone on modular addition (Lee et al. 2024; Nanda et al. 2023)."""

from typing import Any

from plugins.grokfast.experiment import GrokfastExperiment, GrokfastParams

EXAMPLE_FINDING: dict[str, Any] = {
    "title": "Amplifying slow gradients (Grokfast-EMA) on top of weight decay: time to grok modular addition",
    "summary": (
        "Lee et al. ([Grokfast](https://arxiv.org/abs/2405.20233), 2024) read grokking through its "
        "training dynamics: the slow-varying part of the gradient drives generalisation, the fast part "
        "memorisation. Adding an amplified exponential moving average of the gradient (alpha = 0.98, "
        "lambda = 2) is reported to make networks generalise on modular arithmetic many times sooner. "
        "Nanda et al. (2023) give the mechanism's progress measures: the restricted loss (only the key "
        "Fourier frequencies of the logits kept) and the excluded loss (those removed).\n\n"
        "Here the grokking plugin's MLP, data and full-batch AdamW recipe (p = 59, half the pairs, "
        "weight decay 1) is trained with weight decay alone and with Grokfast-EMA added, same seed, "
        "split and initialisation. Measured on 5 seeds: weight decay alone reaches 99% test accuracy at "
        "step 952 +/- 138; with Grokfast-EMA at 1,512 +/- 110, later on every seed. Both end at 100% "
        "test accuracy with a restricted loss near 0 (the key frequencies explain the logits). The "
        "paper's speed-up is pre-registered as its claim and is expected to be refuted in this setting "
        "(an MLP, Adam's normalisation and strong weight decay, not the paper's transformer)."
    ),
    "kind": "fix",
    "tags": ["grokking", "grokfast", "fourier", "progress-measures", "modular-arithmetic", "toy-model"],
    "references": ["arXiv:2405.20233", "arXiv:2301.05217", "arXiv:2201.02177"],
    "params": {},
    # test accuracy is 1.000 in both arms on every seed: a zero-variance non-inferiority needs 6 seeds
    # for the exact sign test, as in the grokking example.
    "seeds": 6,
    "claims": [
        {
            "metric": "steps_to_test_99",
            "direction": "decrease",
            "min_relative_effect": 0.2,
            "statement": "Grokfast-EMA reaches 99% test accuracy at least 20% sooner than weight decay alone "
            "(the paper's claim; measured here on 5 seeds: 952 +/- 138 steps alone, 1,512 +/- 110 with "
            "Grokfast, so likely refuted in this setting).",
        },
        {
            "metric": "test_accuracy",
            "direction": "non_inferior",
            "margin": 0.02,
            "threshold_unit": "absolute",
            "statement": "Grokfast-EMA costs no final test accuracy: not more than 2 points below weight decay "
            "alone (measured: 1.000 in both arms on all 5 seeds).",
        },
    ],
}

__all__ = ["EXAMPLE_FINDING", "GrokfastExperiment", "GrokfastParams"]
