"""Built-in plugin: ERM follows a spurious colour, IRM the invariant shape (synthetic Colored-MNIST)."""

from plugins.shortcut.experiment import ShortcutExperiment, ShortcutParams

__all__ = ["EXAMPLE_FINDING", "ShortcutExperiment", "ShortcutParams"]

EXAMPLE_FINDING = {}
