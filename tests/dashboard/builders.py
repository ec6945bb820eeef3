"""Rows for dashboard tests, built through the services where they exist and straight through
the ORM for what a worker would write (runs, measurements, artifacts). Nothing is dispatched to
the broker: reproductions are written as rows, so no Celery worker can pick them up."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from registry.findings.models import Claim, Finding
from registry.findings.services import claim_create, finding_create
from registry.reproductions.models import Artifact, Experiment, Measurement, Reproduction, Run
from registry.reproductions.services import artifact_path, experiment_create
from tests.effects.builders import recompute_as_the_worker


@dataclass(frozen=True)
class Censored:
    """A time-to-event value whose event was not reached within ``budget`` (stored censored)."""

    budget: float


Value = float | Censored
Pairs = Sequence[tuple[Value, Value]]

# Five seeds of the fake "echo" plugin: risk (safety, lower is better) about halved, skill
# (capability, higher is better) about +50% (or flat), width (diagnostic) flat.
RISK_DOWN: Pairs = [(1.00, 0.50), (1.10, 0.62), (0.90, 0.41), (1.05, 0.52), (0.95, 0.47)]
SKILL_UP: Pairs = [(1.00, 1.50), (1.10, 1.55), (0.90, 1.42), (1.00, 1.52), (1.00, 1.49)]
SKILL_FLAT: Pairs = [(1.00, 1.01), (1.10, 1.09), (0.90, 0.90), (1.00, 0.99), (1.00, 1.00)]
RISK_UP: Pairs = [(0.50, 1.00), (0.62, 1.10), (0.41, 0.90), (0.52, 1.05), (0.47, 0.95)]
FLAT: Pairs = [(3.00, 3.01), (3.10, 3.08), (2.90, 2.91), (3.00, 2.99), (3.00, 3.00)]


def finding(user, **fields) -> Finding:
    fields.setdefault("title", "A finding")
    fields.setdefault("kind", Finding.Kind.FIX)
    return finding_create(user=user, **fields)


def echo_experiment(finding_: Finding, user, **fields) -> Experiment:
    fields.setdefault("default_seeds", 3)
    return experiment_create(finding=finding_, user=user, plugin="echo", reproduce=False, **fields)


def claim(finding_: Finding, user, metric: str = "risk", direction: str = "decrease", **fields) -> Claim:
    if direction != "non_inferior":
        fields.setdefault("min_relative_effect", 0.3)
    return claim_create(finding=finding_, user=user, metric=metric, direction=direction, **fields)


def measured(
    experiment: Experiment,
    values: dict[str, Pairs] | None = None,
    *,
    user=None,
    hardware: str = "cpu",
    recompute: bool = True,
) -> Reproduction:
    """A registry reproduction whose runs succeeded with ``values[metric][i]`` = (baseline,
    intervention), by default safety-leaning (risk halves, skill flat). The finding's effects are
    then recomputed, as the worker's task does after a run finishes (unless ``recompute=False``).
    A ``Censored(budget)`` value is stored as a censored measurement (event not reached)."""
    values = values or {"risk": RISK_DOWN, "skill": SKILL_FLAT, "width": FLAT}
    n = len(next(iter(values.values())))
    reproduction = Reproduction.objects.create(
        experiment=experiment, requested_by=user or experiment.created_by, seeds=list(range(n))
    )
    for seed in range(n):
        run = Run.objects.create(
            reproduction=reproduction,
            seed=seed,
            state=Run.State.SUCCEEDED,
            progress=1.0,
            hardware=hardware,
            plugin_version="1.0.0",
            environment={"torch": "2.x", "device": "cpu", "seed": seed},
            logs=f"echo seed {seed}",
        )
        Measurement.objects.bulk_create(
            [
                Measurement(
                    run=run,
                    arm=arm,
                    metric=metric,
                    value=value.budget if isinstance(value, Censored) else value,
                    censored=isinstance(value, Censored),
                )
                for metric, pairs in values.items()
                for arm, value in zip(("baseline", "intervention"), pairs[seed], strict=True)
            ]
        )
    if recompute:
        recompute_as_the_worker(experiment.finding_id)
    return reproduction


def queued(experiment: Experiment, n: int = 2, *, user=None, state: str = Run.State.QUEUED) -> Reproduction:
    reproduction = Reproduction.objects.create(
        experiment=experiment, requested_by=user or experiment.created_by, seeds=list(range(n))
    )
    Run.objects.bulk_create([Run(reproduction=reproduction, seed=seed, state=state) for seed in range(n)])
    return reproduction


def artifact(run: Run, name: str = "samples.png", content_type: str = "image/png") -> Artifact:
    return Artifact.objects.create(run=run, name=name, sha256="0" * 64, size=123, content_type=content_type)


def stored_png(run: Run, name: str = "samples.png") -> Artifact:
    """A real 8x8 PNG in artifact storage, as a run would have saved it."""
    import numpy as np
    from interp_registry.sdk import png_bytes

    data = png_bytes(np.linspace(0.0, 1.0, 64).reshape(8, 8))
    row = Artifact.objects.create(
        run=run, name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data), content_type="image/png"
    )
    path = artifact_path(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return row


def recompute(finding_: Finding) -> None:
    """Recompute a finding's effects now, as the worker's task does after a change."""
    recompute_as_the_worker(finding_.pk)
