"""Built-in plugin: Grokfast-EMA against weight decay alone on modular addition (Lee et al. 2024; Nanda et al. 2023)."""

from typing import Any

from plugins.grokfast.experiment import GrokfastExperiment, GrokfastParams
from plugins.grokking import EXAMPLE_FINDING as GROKKING_FINDING

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
        "step 960 +/- 125; with Grokfast-EMA at 1,496 +/- 98, later on every seed (952 +/- 138 and "
        "1,512 +/- 110 on another CPU). Both end at 100% "
        "test accuracy with a restricted loss near 0 (the key frequencies explain the logits). The "
        "paper's speed-up is pre-registered as its claim and is expected to be refuted in this setting "
        "(an MLP, Adam's normalisation and strong weight decay, not the paper's transformer)."
    ),
    "kind": "fix",
    "tags": ["grokking", "grokfast", "fourier", "progress-measures", "modular-arithmetic", "toy-model"],
    "references": ["arXiv:2405.20233", "arXiv:2301.05217", "arXiv:2201.02177"],
    "params": {},
    # test accuracy is 1.000 in both arms on every seed: a zero-variance non-inferiority is decided by
    # the exact sign test at 0.975 (one-sided), which needs 7 seeds (all 6 on one side: p = 2^-6 > 0.025)
    "seeds": 7,
    "claims": [
        {
            "metric": "steps_to_test_99",
            "direction": "decrease",
            "min_relative_effect": 0.2,
            "statement": "Grokfast-EMA reaches 99% test accuracy at least 20% sooner than weight decay alone "
            "(the paper's claim; measured here on 5 seeds: 960 +/- 125 steps alone, 1,496 +/- 98 with "
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

# The same plugin's mechanism-derived intervention, a finding of its own (registry/findings/examples.py
# loads every entry): it builds on the grokking theory whose mechanism it uses.
FOURIER_INIT_FINDING: dict[str, Any] = {
    "title": "Starting the embedding in the grokked circuit's Fourier form makes modular addition generalise sooner",
    "summary": (
        "Nanda et al. ([Progress measures for grokking](https://arxiv.org/abs/2301.05217), 2023) found "
        "that a network that has grokked (a + b) mod p embeds every residue x as cos and sin waves "
        "2 pi k x / p at a few key frequencies and adds with trigonometric identities. If that is the "
        "mechanism, an embedding that *starts* in that form should shorten the road to it.\n\n"
        "Here the grokking plugin's MLP, data and full-batch AdamW recipe (p = 59, half the pairs, "
        "weight decay 1) is trained twice from the same seed: from the default initialisation, and "
        "with the first 10 embedding dimensions replaced by cos/sin waves at 5 frequencies drawn from "
        "the seed (not read off a trained model), the whole embedding rescaled to the default's norm. "
        "Measured on the default parameters, seeds 0-7: 99% test accuracy at step 978 +/- 149 from the "
        "default initialisation and 633 +/- 158 from the Fourier form, sooner on every seed, with 100% "
        "final test accuracy in both arms. A second experiment is the control: the same waves with "
        "the residues shuffled (same values and norm, no waves over the residues) reach 99% at 978 "
        "+/- 120, no sooner than the default, so the gain comes from the form over the residues' "
        "arithmetic. An interpretability finding turned into a capability gain."
    ),
    "kind": "fix",
    "tags": ["grokking", "fourier", "initialisation", "mechanistic", "modular-arithmetic", "toy-model"],
    "references": ["arXiv:2301.05217", "arXiv:2201.02177"],
    "params": {"intervention_arm": "fourier_init"},
    # the control: the same wave values and norm with the residues shuffled (no waves over x)
    "more_experiments": [
        {
            "params": {"intervention_arm": "fourier_init", "baseline_arm": "shuffled_fourier"},
            "seeds": 8,
            "label": "against the same waves over shuffled residues (baseline_arm=shuffled_fourier)",
        }
    ],
    "builds_on_titles": [GROKKING_FINDING["title"]],
    # test accuracy is 1.000 in both arms on every seed: two claims in two experiments are 4 tests at a
    # Bonferroni 0.9875, where the exact sign test needs 8 seeds (all 7 on one side: two-sided p = 2^-6
    # > 0.0125; all 8: 2^-7 < 0.0125)
    "seeds": 8,
    "claims": [
        {
            "metric": "steps_to_test_99",
            "direction": "decrease",
            "min_relative_effect": 0.15,
            "statement": "From the Fourier-form embedding, test accuracy reaches 99% at least 15% sooner than "
            "from the default initialisation, and than from the same waves over shuffled residues "
            "(measured on seeds 0-7: 978 +/- 149 and 978 +/- 120 -> 633 +/- 158 steps; per seed -19% to "
            "-66% against the default, -4% to -52% against the shuffled waves).",
        },
        {
            "metric": "test_accuracy",
            "direction": "non_inferior",
            "margin": 0.02,
            "threshold_unit": "absolute",
            "statement": "The Fourier-form start costs no final test accuracy: not more than 2 points below the "
            "default initialisation, nor below the shuffled waves (measured: 1.000 in every arm on every seed).",
        },
    ],
}
MORE_EXAMPLE_FINDINGS = [FOURIER_INIT_FINDING]

__all__ = ["EXAMPLE_FINDING", "FOURIER_INIT_FINDING", "MORE_EXAMPLE_FINDINGS", "GrokfastExperiment", "GrokfastParams"]
