"""Rows for effects tests, written straight through the ORM (no worker): an experiment of the
fake ``echo`` plugin (risk: safety, lower is better; skill: capability; width: diagnostic) and
reproductions whose succeeded runs carry given (baseline, intervention) values."""

from __future__ import annotations

from collections.abc import Sequence

from plugins.registry import get_plugin
from registry.effects.services import finding_effects_recompute
from registry.findings.models import Claim, Finding
from registry.reproductions.models import Experiment, Measurement, Reproduction, Run
from registry.reproductions.services import params_validate

Pairs = Sequence[tuple[float, float]]

# Five seeds, tight effects: risk about 50% lower, skill about 50% higher, and a flat skill.
RISK_DOWN: Pairs = [(1.00, 0.50), (1.10, 0.62), (0.90, 0.41), (1.05, 0.52), (0.95, 0.47)]
SKILL_UP: Pairs = [(1.00, 1.50), (1.10, 1.55), (0.90, 1.42), (1.00, 1.52), (1.00, 1.49)]
FLAT: Pairs = [(1.00, 1.02), (1.10, 1.08), (0.90, 0.91), (1.00, 0.99), (1.00, 1.00)]


def echo_params() -> dict:
    return params_validate(get_plugin("echo"), {})


def experiment_for(finding: Finding, *, plugin: str = "echo", params: dict | None = None) -> Experiment:
    return Experiment.objects.create(
        finding=finding,
        plugin=plugin,
        params=echo_params() if params is None else params,
        created_by=finding.created_by,
    )


def reproduction(
    experiment: Experiment,
    values: dict[str, Pairs],
    *,
    user=None,
    source: str = Reproduction.Source.REGISTRY,
    hardware: str = "cpu",
    seeds: Sequence[int] | None = None,
    version: int = 1,
) -> Reproduction:
    """One reproduction: run i gets ``values[metric][i]`` as (baseline, intervention)."""
    n = len(next(iter(values.values())))
    seeds = list(seeds) if seeds is not None else list(range(n))
    repro = Reproduction.objects.create(
        experiment=experiment, requested_by=user or experiment.finding.created_by, seeds=seeds, source=source
    )
    for i, seed in enumerate(seeds):
        run = Run.objects.create(reproduction=repro, seed=seed, state=Run.State.SUCCEEDED, hardware=hardware)
        Measurement.objects.bulk_create(
            [
                Measurement(run=run, arm=arm, metric=metric, metric_version=version, value=value)
                for metric, pairs in values.items()
                for arm, value in zip(("baseline", "intervention"), pairs[i], strict=True)
            ]
        )
    return repro


def claim(finding: Finding, metric: str, direction: str, *, min_relative_effect=None, margin=None) -> Claim:
    if direction != "non_inferior" and min_relative_effect is None:
        min_relative_effect = 0.0
    return Claim.objects.create(
        finding=finding,
        metric=metric,
        direction=direction,
        min_relative_effect=min_relative_effect,
        margin=margin,
        created_by=finding.created_by,
    )


def recompute(finding: Finding) -> dict:
    data = finding_effects_recompute(finding_id=finding.pk)
    finding.refresh_from_db()
    return data


def claim_entry(data: dict, claim_obj: Claim) -> dict:
    return next(c for c in data["claims"] if c["claim"] == claim_obj.pk)


def metric_entries(data: dict, metric: str) -> list[dict]:
    return [m for m in data["metrics"] if m["metric"] == metric]


def recompute_as_the_worker(finding_id: int) -> dict:
    """What a change followed by the worker's task does: request a recompute (rows written straight
    through the ORM request none), then run the task's body."""
    from django.db import transaction

    from registry.effects.services import effects_recompute_request, effects_recompute_run

    with transaction.atomic():
        effects_recompute_request(finding_id=finding_id)
    return effects_recompute_run(finding_id=finding_id)
