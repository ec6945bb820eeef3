"""Discovery of experiment plugins through the ``interp_registry.experiments`` entry points.

A broken plugin (import error, bad declaration, incompatible API version, not allowed) is
listed as unavailable with its reason; it never takes the registry down.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points

from interp_registry.sdk import ENTRY_POINT_GROUP, Experiment
from interp_registry.testing import declaration_errors  # the one contract the worker and authors share

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginEntry:
    name: str
    experiment: type[Experiment] | None
    source: str
    error: str = ""

    @property
    def available(self) -> bool:
        return self.experiment is not None and not self.error


class PluginNotFound(LookupError):
    pass


class PluginUnavailable(LookupError):
    pass


_cache: dict[str, PluginEntry] | None = None
_temporary: dict[str, PluginEntry] = {}


def _load(entry_points_: Iterable, allowed: set[str] | None) -> dict[str, PluginEntry]:
    found: dict[str, PluginEntry] = {}
    for ep in entry_points_:
        source = f"{ep.value}"
        if allowed is not None and ep.name not in allowed:
            found[ep.name] = PluginEntry(ep.name, None, source, "not in the PLUGINS_ALLOWED list")
            continue
        try:
            experiment = ep.load()
        except Exception as exc:  # a broken plugin must never take the registry down
            logger.warning("plugin %s failed to import: %s", ep.name, exc)
            found[ep.name] = PluginEntry(ep.name, None, source, f"import failed: {exc!r}")
            continue
        try:
            errors = declaration_errors(experiment)
        except Exception as exc:  # a declaration too malformed to even inspect
            errors = [f"malformed declaration: {exc!r}"]
        if not errors and experiment.name != ep.name:
            errors.append(f"entry point {ep.name!r} names a plugin called {experiment.name!r}")
        if errors:
            logger.warning("plugin %s is unavailable: %s", ep.name, "; ".join(errors))
            found[ep.name] = PluginEntry(ep.name, None, source, "; ".join(errors))
            continue
        found[ep.name] = PluginEntry(ep.name, experiment, source)
    return found


@dataclass(frozen=True)
class _ExtraEntryPoint:
    """A ``name=module:Class`` item of the PLUGINS_EXTRA setting, loaded like an entry point."""

    name: str
    value: str

    def load(self) -> object:
        import importlib

        module, _, attribute = self.value.partition(":")
        return getattr(importlib.import_module(module), attribute)


def _extra_from_settings() -> list[_ExtraEntryPoint]:
    try:
        from django.conf import settings

        items = getattr(settings, "PLUGINS_EXTRA", [])
    except Exception:
        items = []
    extra = []
    for item in items:
        name, _, value = item.partition("=")
        if name and ":" in value:
            extra.append(_ExtraEntryPoint(name.strip(), value.strip()))
        else:
            logger.warning("PLUGINS_EXTRA item %r is not name=module:Class; ignored", item)
    return extra


def _allowed_from_settings() -> set[str] | None:
    try:
        from django.conf import settings

        allowed = getattr(settings, "PLUGINS_ALLOWED", None)
    except Exception:
        allowed = None
    return set(allowed) if allowed else None


def all_plugins(*, refresh: bool = False) -> dict[str, PluginEntry]:
    """Every discovered plugin, available or not, by name."""
    global _cache
    if _cache is None or refresh:
        discovered = [*entry_points(group=ENTRY_POINT_GROUP), *_extra_from_settings()]
        _cache = _load(discovered, _allowed_from_settings())
    return {**_cache, **_temporary}


def get_plugin(name: str) -> type[Experiment]:
    """The experiment class of an available plugin; raises PluginNotFound / PluginUnavailable."""
    entry = all_plugins().get(name)
    if entry is None:
        raise PluginNotFound(name)
    if not entry.available:
        raise PluginUnavailable(f"{name}: {entry.error}")
    assert entry.experiment is not None
    return entry.experiment


def reset_cache() -> None:
    global _cache
    _cache = None


@contextlib.contextmanager
def register_temporarily(experiment: type[Experiment]) -> Iterator[type[Experiment]]:
    """Make a plugin available for the duration of a ``with`` block (tests)."""
    errors = declaration_errors(experiment)
    entry = PluginEntry(
        getattr(experiment, "name", "?"), None if errors else experiment, "temporary", "; ".join(errors)
    )
    _temporary[entry.name] = entry
    try:
        yield experiment
    finally:
        _temporary.pop(entry.name, None)
