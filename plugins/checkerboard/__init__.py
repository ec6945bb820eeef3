"""Built-in plugin: checkerboard artifacts of transposed convolutions (Odena et al., Distill 2016)."""

from plugins.checkerboard.experiment import CheckerboardExperiment, CheckerboardParams

__all__ = ["CheckerboardExperiment", "CheckerboardParams", "EXAMPLE_FINDING"]

EXAMPLE_FINDING: dict = {}
