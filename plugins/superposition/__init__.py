"""Built-in plugin: toy models of superposition (Elhage et al., 2022)."""

from plugins.superposition.experiment import SuperpositionExperiment, SuperpositionParams

__all__ = ["EXAMPLE_FINDING", "SuperpositionExperiment", "SuperpositionParams"]

EXAMPLE_FINDING: dict = {}
