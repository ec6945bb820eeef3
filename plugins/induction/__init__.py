"""Built-in plugin: induction heads form in two-layer, not one-layer, attention-only models."""

from plugins.induction.experiment import InductionHeadsExperiment, InductionParams

__all__ = ["EXAMPLE_FINDING", "InductionHeadsExperiment", "InductionParams"]

EXAMPLE_FINDING = {}
