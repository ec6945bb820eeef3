"""Deprecated alias of :mod:`interp_registry.sdk` (the plugin SDK moved to the light
``interp-registry`` distribution). Kept for one release: the names here are the very objects of
``interp_registry.sdk``, so ``isinstance``/``issubclass`` agree across both names. New code writes
``from interp_registry.sdk import ...``. Importing it warns (DeprecationWarning).
"""

import warnings

from interp_registry.sdk import (
    API_VERSION,
    BASELINE,
    ENTRY_POINT_GROUP,
    INTERVENTION,
    Axis,
    Experiment,
    LocalContext,
    Metric,
    NotReached,
    Params,
    Resources,
    RunContext,
    Scale,
    StopRequested,
    check_stop,
    png_bytes,
    run_locally,
    seed_everything,
)

__all__ = [
    "API_VERSION",
    "BASELINE",
    "ENTRY_POINT_GROUP",
    "INTERVENTION",
    "Axis",
    "Experiment",
    "LocalContext",
    "Metric",
    "NotReached",
    "Params",
    "Resources",
    "RunContext",
    "Scale",
    "StopRequested",
    "check_stop",
    "png_bytes",
    "run_locally",
    "seed_everything",
]

warnings.warn(
    "plugins.sdk is deprecated and will be removed in the next release: import from interp_registry.sdk "
    "(the same objects) instead",
    DeprecationWarning,
    stacklevel=2,
)
