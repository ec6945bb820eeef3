"""Built-in plugin: smeared keys let a one-layer attention-only model form induction heads."""

from typing import Any

from plugins.smeared_keys.experiment import SmearedKeysExperiment, SmearedKeysParams

__all__ = ["EXAMPLE_FINDING", "SmearedKeysExperiment", "SmearedKeysParams"]

EXAMPLE_FINDING: dict[str, Any] = {
    "title": "Smeared keys let a single attention layer form induction heads",
    "summary": (
        "Olsson et al. ([In-context Learning and Induction Heads](https://arxiv.org/abs/2209.11895), "
        "2022, Argument 2) explain induction heads as a two-step mechanism, a previous-token step and a "
        "match, which a one-layer attention-only model cannot compose. Making every key a learned mix of "
        "its own and the previous token's key (\"smeared keys\") builds the first step into the "
        "architecture, and one-layer models then form induction heads on the ordinary language-model "
        "loss.\n\n"
        "Reproduction on random tokens ending in a repeated segment, one attention layer in both arms, "
        "ordinary next-token loss over the whole sequence: with smeared keys the best head's induction "
        "score rises from 0.08 to 0.72 and the accuracy on the repeated segment from 13% to 92% "
        "(5 seeds, default parameters); in every seed one or two heads learn to key ~90% on the "
        "previous token."
    ),
    "kind": "fix",
    "tags": ["induction-heads", "in-context-learning", "smeared-keys", "attention", "circuits"],
    "references": [
        "arXiv:2209.11895",
        "https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/index.html",
    ],
    # The induction plugin's theory finding, when the embedded examples load it too.
    "builds_on_titles": ["Induction heads need a second attention layer"],
    "params": {},
    "seeds": 5,
    "claims": [
        {
            "metric": "induction_score",
            "direction": "increase",
            "min_relative_effect": 0.5,
            "threshold_unit": "absolute",
            "statement": "Smeared keys raise the best head's induction score by at least 50 points "
            "(measured: 0.082 ± 0.002 to 0.722 ± 0.022, 5 seeds).",
        },
        {
            "metric": "repeat_accuracy",
            "direction": "increase",
            "min_relative_effect": 0.5,
            "threshold_unit": "absolute",
            "statement": "Smeared keys raise the accuracy on repeated tokens by at least 50 points "
            "(measured: 12.7% ± 0.7 to 92.4% ± 0.4, 5 seeds).",
        },
        {
            "metric": "repeat_loss",
            "direction": "decrease",
            "min_relative_effect": 0.5,
            "statement": "Smeared keys at least halve the loss on repeated tokens (measured: 3.52 ± 0.07 to "
            "0.34 ± 0.02 nats, 5 seeds).",
        },
    ],
}
