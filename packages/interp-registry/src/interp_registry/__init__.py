"""Interpretability Findings Registry, the light distribution (no Django, no Celery).

- :mod:`interp_registry.sdk`: the experiment plugin SDK;
- :mod:`interp_registry.testing`: the plugin contract checks the registry's workers apply;
- :mod:`interp_registry.client`: ``Registry(url, token)``, a Python client of the registry's API;
- :mod:`interp_registry.findings`: findings as code (YAML files with a JSON Schema);
- ``interp-registry``: the command line (:mod:`interp_registry.cli`).

Submodules are imported on use: ``import interp_registry`` loads nothing heavy.
"""

__version__ = "0.1.0"
