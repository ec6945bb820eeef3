"""Example findings for the embedded default: one per built-in plugin (its EXAMPLE_FINDING) and any
more a plugin package lists (MORE_EXAMPLE_FINDINGS, e.g. a second intervention of the same plugin),
plus the checkerboard theory that the resize-convolution fix builds on."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from plugins.registry import all_plugins
from registry.findings.models import Finding
from registry.findings.services import claim_create, finding_create
from registry.reproductions.services import experiment_create

logger = logging.getLogger(__name__)

CHECKERBOARD_THEORY: dict[str, Any] = {
    "title": "Transposed convolutions overlap unevenly, which paints checkerboard artifacts",
    "summary": (
        "Odena, Dumoulin & Olah (Distill 2016): a transposed convolution whose kernel size is not "
        "divisible by its stride puts uneven amounts of the kernel on each output pixel (k=3, s=2: "
        "1,2,1,2 in 1-D, up to 4x between pixels in 2-D). The pattern is present at initialisation "
        "and survives training when the loss cannot see the highest frequencies."
    ),
    "kind": "theory",
    "tags": ["checkerboard", "vision", "generative"],
    "references": ["https://distill.pub/2016/deconv-checkerboard/", "doi:10.23915/distill.00003"],
    "plugin": "checkerboard",
    "params": {},
    # The overlap ratio is the same on every seed (4 vs 1): a zero-variance effect needs 6 seeds
    # before the exact sign test can confirm it at 95%.
    "seeds": 6,
    "claims": [
        {"metric": "overlap_ratio", "direction": "decrease", "min_relative_effect": 0.7,
         "statement": "Resize-convolution overlaps evenly (ratio 1) where k3 s2 overlaps 4:1."},
    ],
}


def example_specs() -> list[dict[str, Any]]:
    specs = []
    for name, entry in sorted(all_plugins().items()):
        if not entry.available:
            continue
        module = importlib.import_module(entry.experiment.__module__)
        package = importlib.import_module(entry.experiment.__module__.rsplit(".", 1)[0])
        example = getattr(module, "EXAMPLE_FINDING", None) or getattr(package, "EXAMPLE_FINDING", None)
        if example:
            specs.append({**example, "plugin": name})
        specs.extend({**more, "plugin": name} for more in getattr(package, "MORE_EXAMPLE_FINDINGS", ()))
    if any(spec["plugin"] == "checkerboard" for spec in specs):
        for spec in specs:
            if spec["plugin"] == "checkerboard":
                spec.setdefault("builds_on_titles", [CHECKERBOARD_THEORY["title"]])
        specs.insert(0, CHECKERBOARD_THEORY)
    return _parents_first(specs)


def _parents_first(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The specs with every finding after those it builds on, so its links find them (otherwise in
    the given order); a parent that is not among the specs (or a cycle) does not hold a spec back."""
    titles = {spec["title"] for spec in specs}
    ordered: list[dict[str, Any]] = []
    placed: set[str] = set()
    waiting = list(specs)
    while waiting:
        ready = [s for s in waiting if all(t in placed or t not in titles for t in s.get("builds_on_titles", ()))]
        for spec in ready or waiting[:1]:  # a cycle: take the first as it is
            ordered.append(spec)
            placed.add(spec["title"])
            waiting.remove(spec)
    return ordered


def examples_load(*, reproduce: bool = True, username: str = "examples", preset: str | None = None) -> list[Finding]:
    """Create the example findings that do not exist yet (matched by title); idempotent.

    ``preset`` (e.g. "tiny"): each example runs on the plugin's preset (a quick demo), with the
    example's own parameters, which label its setting, on top.
    """
    user, _ = get_user_model().objects.get_or_create(username=username)
    created = []
    for spec in example_specs():
        if Finding.objects.filter(title=spec["title"]).exists():
            continue
        try:
            with transaction.atomic():  # one example at a time: a broken one leaves nothing behind
                created.append(_example_create(spec, user=user, reproduce=reproduce, preset=preset))
        except Exception:
            logger.exception("example finding %r could not be created; skipped", spec["title"])
    return created


def _example_create(spec: dict[str, Any], *, user: Any, reproduce: bool, preset: str | None) -> Finding:
    parents = list(Finding.objects.filter(title__in=spec.get("builds_on_titles", [])))
    finding = finding_create(
        user=user,
        title=spec["title"],
        kind=spec["kind"],
        summary=spec.get("summary", ""),
        tags=spec.get("tags", []),
        references=spec.get("references", []),
        builds_on=parents,
    )
    params = dict(spec.get("params", {}))
    entry = all_plugins().get(spec["plugin"])
    if preset and entry and entry.available:
        # the example's own parameters (what labels its setting) stay on top of the preset
        params = {**entry.experiment.presets.get(preset, {}), **params}
    experiment_create(
        finding=finding,
        user=user,
        plugin=spec["plugin"],
        params=params,
        label=spec.get("label", ""),
        default_seeds=spec.get("seeds", 3),
        reproduce=reproduce,
    )
    # More experiments of the same plugin under other parameters (e.g. checkerboard's loss setting):
    # their own parameters stay on top of the preset, since they are what labels the setting.
    for extra in spec.get("more_experiments", []):
        extra_params = dict(extra.get("params", {}))
        if preset and entry and entry.available:
            extra_params = {**entry.experiment.presets.get(preset, {}), **extra_params}
        experiment_create(
            finding=finding,
            user=user,
            plugin=spec["plugin"],
            params=extra_params,
            label=extra.get("label", ""),
            default_seeds=extra.get("seeds", spec.get("seeds", 3)),
            reproduce=reproduce,
        )
    for claim in spec.get("claims", []):
        claim_create(finding=finding, user=user, **claim)
    return finding
