"""Built-in plugin: induction heads form in two-layer, not one-layer, attention-only models."""

from typing import Any

from plugins.induction.experiment import InductionHeadsExperiment, InductionParams

__all__ = ["EXAMPLE_FINDING", "InductionHeadsExperiment", "InductionParams"]

EXAMPLE_FINDING: dict[str, Any] = {
    "title": "Induction heads need a second attention layer",
    "summary": (
        "Olsson et al. (2022, *In-context Learning and Induction Heads*) report that induction heads "
        "(attend from a repeated token to the token after its earlier occurrence, then copy it) arise by "
        "composing two attention layers, in an abrupt phase change that coincides with a sharp drop of the "
        "loss on repeated text; one-layer attention-only models never form them.\n\n"
        "On sequences of random tokens ending in a repeated segment of random length, a two-layer "
        "attention-only transformer develops a head whose attention follows the induction pattern and "
        "predicts the repeat almost perfectly, while a one-layer model trained identically only learns to "
        "favour tokens already seen in the context."
    ),
    "kind": "theory",
    "tags": ["induction-heads", "in-context-learning", "phase-change", "attention", "circuits"],
    "references": [
        "arXiv:2209.11895",
        "https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/index.html",
        "https://transformer-circuits.pub/2021/framework/index.html",
    ],
    "params": {},
    "seeds": 3,
    "claims": [
        {
            "metric": "induction_score",
            "direction": "increase",
            "min_relative_effect": 0.5,
            "threshold_unit": "absolute",
            "statement": "A second attention layer raises the best head's induction score by at least 50 points "
            "(measured: about 0.09 to 0.81).",
        },
        {
            "metric": "repeat_loss",
            "direction": "decrease",
            "min_relative_effect": 0.5,
            "statement": "A second attention layer at least halves the loss on repeated tokens (measured: about "
            "2.9 to 0.22 nats).",
        },
        {
            "metric": "repeat_accuracy",
            "direction": "increase",
            "min_relative_effect": 0.5,
            "threshold_unit": "absolute",
            "statement": "A second attention layer raises the accuracy on repeated tokens by at least 50 points "
            "(measured: about 16% to 93%).",
        },
    ],
}
