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
        "favour tokens already seen in the context.\n\n"
        "Two training losses, one experiment each. The first trains on the repeated segment's predictions "
        "only (`train_on_repeat_only=true`, a curriculum the paper does not use), and heads form in the "
        "600-step CPU budget. The second, labelled, uses the paper's ordinary next-token loss over the whole "
        "sequence (`train_on_repeat_only=false`) at the same budget; there no induction head forms (measured, "
        "seeds 0-2: the two-layer model's best score 0.02-0.06, below the one-layer model's 0.08), so its "
        "claims are expected to fail: the CPU budget is too small for the paper's loss. At lr 3e-3 and 2,000 "
        "steps a head formed on seed 0 (after ~1,100 steps) but not on seeds 1-2; the gpu preset uses the "
        "ordinary loss with a longer budget."
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
    "more_experiments": [
        {
            "params": {"train_on_repeat_only": False},
            "seeds": 3,
            "label": "ordinary next-token loss (train_on_repeat_only=false), default budget: no head forms",
        }
    ],
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
        {
            "metric": "abruptness",
            "direction": "increase",
            "min_relative_effect": 0.3,
            "threshold_unit": "absolute",
            "statement": "The induction score rises abruptly with a second layer: at least 30 points more of its "
            "range within the steepest 10% of training (measured, defaults, seeds 0-1: about 0.23 to 0.80-0.85).",
        },
    ],
}
