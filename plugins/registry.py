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

from pydantic import BaseModel

from plugins.sdk import API_VERSION, BASELINE, ENTRY_POINT_GROUP, INTERVENTION, Axis, Experiment, Scale

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


def _api_major(version: str) -> str:
    return str(version).split(".", 1)[0]


def declaration_errors(experiment: object) -> list[str]:
    """What is wrong with a plugin's declaration; empty when it is valid."""
    errors: list[str] = []
    if not isinstance(experiment, type) or not issubclass(experiment, Experiment):
        return ["is not a subclass of plugins.sdk.Experiment"]
    for attribute in ("name", "version"):
        if not isinstance(getattr(experiment, attribute, None), str) or not getattr(experiment, attribute):
            errors.append(f"declares no {attribute}")
    if _api_major(experiment.api_version) != _api_major(API_VERSION):
        errors.append(
            f"was written for plugin API {experiment.api_version}; this registry provides {API_VERSION}"
        )
    if not (isinstance(experiment.Params, type) and issubclass(experiment.Params, BaseModel)):
        errors.append("Params is not a pydantic model")
    if not experiment.metrics:
        errors.append("declares no metrics")
    names = [m.name for m in experiment.metrics]
    if len(names) != len(set(names)):
        errors.append("declares a metric twice")
    scales = ", ".join(repr(s.value) for s in Scale)
    for metric in experiment.metrics:
        if not isinstance(metric.axis, Axis):
            errors.append(f"metric {metric.name!r} has no valid axis")
        if not isinstance(metric.scale, Scale):
            errors.append(f"metric {metric.name!r} has an unknown scale {metric.scale!r} (one of {scales})")
        elif metric.time_to_event and metric.scale is not Scale.RATIO:
            errors.append(
                f"metric {metric.name!r} is a time to an event, so its scale must be 'ratio' "
                f"(not {metric.scale.value!r}): event times are strictly positive"
            )
    if tuple(experiment.arms) != (BASELINE, INTERVENTION):
        errors.append(
            f"declares arms {tuple(experiment.arms)!r}; the registry compares exactly two arms, "
            f"{(BASELINE, INTERVENTION)!r} (intervention versus baseline), so arms must be exactly those"
        )
    if experiment.resources.device not in ("cpu", "gpu"):
        errors.append("resources.device must be 'cpu' or 'gpu'")
    # An ``interval`` attribute left on an old plugin is ignored: the registry chooses the method.
    return errors


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
