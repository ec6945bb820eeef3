"""The plugin contract, as the registry's workers apply it, for a plugin author's own test suite.

The rules (each has a check below):

1. **Declaration** (:func:`declaration_errors`): a subclass of :class:`interp_registry.sdk.Experiment`
   with a non-empty ``name`` and ``version``, an ``api_version`` of the SDK's major version, a pydantic
   ``Params`` model, at least one metric, no metric declared twice, every metric with an
   :class:`~interp_registry.sdk.Axis` and a :class:`~interp_registry.sdk.Scale` (a time-to-event
   metric on the ratio scale), arms exactly ``("baseline", "intervention")`` and
   ``resources.device`` ``"cpu"`` or ``"gpu"``, ``recommended_seeds`` None or an int from 1 to
   ``MAX_RECOMMENDED_SEEDS`` (50). A plugin that breaks one is listed by the registry as
   unavailable, with the reason.
2. **Documentation** (:func:`documentation_errors`): a class docstring saying what the plugin
   reproduces (the registry publishes it as the plugin's description).
3. **Parameters and presets** (:func:`params_errors`): ``Params`` has a valid JSON Schema, its
   defaults validate against it, there is a ``tiny`` preset (what tests and quick demos run) and
   every preset is valid ``Params``.
4. **Results** (:func:`validate_results`): ``run`` returns ``{arm: {metric: value}}`` with every
   declared metric for every declared arm, nothing undeclared, each value a finite number within its
   metric's scale (``ratio``: > 0; ``proportion``: within [0, 1]), or
   :class:`~interp_registry.sdk.NotReached` (finite budget > 0) on a ``time_to_event`` metric only.
   A worker fails a run that breaks this, after the run; ``run_locally`` checks it at once.
5. **Progress** (in :func:`check_plugin`'s tiny run): ``ctx.progress`` is called and reaches 1.0.
6. **Seeds in parallel** (:func:`batched_seeds_errors`, only for a plugin with ``batched_seeds =
   True``, which must override ``run_seeds`` and state a finite ``batched_seeds_tolerance`` >= 0):
   ``run_seeds`` on a few seeds returns one result per seed, each valid (rule 4) with progress
   reaching 1.0 on every seed's context, and each within the tolerance of what ``run`` returns for
   that seed alone: ``|batched - alone| <= tolerance * max(1, |alone|)``; a ``NotReached`` only
   where ``run`` gives one, with the same budget.

In a plugin's own tests::

    from interp_registry.testing import assert_contract

    def test_contract():
        assert_contract(MyExperiment)          # declaration, docs, presets and a tiny run

The checks import nothing from the registry server (no Django).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel

from interp_registry.sdk import (
    API_VERSION,
    BASELINE,
    INTERVENTION,
    MAX_RECOMMENDED_SEEDS,
    Axis,
    Experiment,
    Metric,
    NotReached,
    Scale,
)

__all__ = [
    "ContractError",
    "ResultRow",
    "assert_contract",
    "batched_seeds_errors",
    "check_plugin",
    "check_value",
    "declaration_errors",
    "documentation_errors",
    "params_errors",
    "validate_results",
]


class ContractError(ValueError):
    """A plugin or its output breaks the contract the registry enforces (the message says how)."""


class ResultRow(NamedTuple):
    """One checked value, as a worker stores it (a censored value holds the budget)."""

    arm: str
    metric: str
    version: int
    value: float
    censored: bool = False


def _api_major(version: Any) -> str:
    return str(version).split(".", 1)[0]


def declaration_errors(experiment: object) -> list[str]:
    """What is wrong with a plugin's declaration (rule 1); empty when it is valid."""
    errors: list[str] = []
    if not isinstance(experiment, type) or not issubclass(experiment, Experiment):
        return ["is not a subclass of interp_registry.sdk.Experiment"]
    for attribute in ("name", "version"):
        if not isinstance(getattr(experiment, attribute, None), str) or not getattr(experiment, attribute):
            errors.append(f"declares no {attribute}")
    if _api_major(experiment.api_version) != _api_major(API_VERSION):
        errors.append(f"was written for plugin API {experiment.api_version}; this registry provides {API_VERSION}")
    if not (isinstance(experiment.Params, type) and issubclass(experiment.Params, BaseModel)):
        errors.append("Params is not a pydantic model")
    if not experiment.metrics:
        errors.append("declares no metrics")
    names = [m.name for m in experiment.metrics]
    if len(names) != len(set(names)):
        errors.append("declares a metric twice")
    scales = ", ".join(repr(s.value) for s in Scale)
    for metric in experiment.metrics:
        if not isinstance(metric, Metric):
            errors.append(f"metric {metric!r} is not an interp_registry.sdk.Metric")
            continue
        if not isinstance(metric.axis, Axis):
            errors.append(f"metric {metric.name!r} has no valid axis")
        if not isinstance(metric.higher_is_better, bool):
            errors.append(f"metric {metric.name!r}: higher_is_better must be True or False")
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
    seeds = getattr(experiment, "recommended_seeds", None)
    if seeds is not None and (
        isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_RECOMMENDED_SEEDS
    ):
        errors.append(f"recommended_seeds must be an int from 1 to {MAX_RECOMMENDED_SEEDS} (or None), not {seeds!r}")
    batched = getattr(experiment, "batched_seeds", False)
    if not isinstance(batched, bool):
        errors.append(f"batched_seeds must be True or False, not {batched!r}")
    elif batched:
        if getattr(experiment, "run_seeds", None) is Experiment.run_seeds:
            errors.append("declares batched_seeds = True but does not override run_seeds")
        tolerance = getattr(experiment, "batched_seeds_tolerance", None)
        if (
            isinstance(tolerance, bool) or not isinstance(tolerance, int | float)
            or not math.isfinite(tolerance) or tolerance < 0
        ):
            errors.append(f"batched_seeds_tolerance must be a finite number >= 0, not {tolerance!r}")
    return errors


def documentation_errors(experiment: type[Experiment]) -> list[str]:
    """Rule 2: a class docstring of its own (not the base class's) saying what it reproduces."""
    doc = experiment.__dict__.get("__doc__")
    if not (isinstance(doc, str) and doc.strip()):
        return [f"{experiment.__qualname__} has no docstring: document what the plugin reproduces"]
    return []


def params_errors(experiment: type[Experiment]) -> list[str]:
    """Rule 3: a valid parameter schema, valid defaults, a ``tiny`` preset, every preset valid."""
    import jsonschema

    errors: list[str] = []
    try:
        schema = experiment.params_schema()
        jsonschema.Draft202012Validator.check_schema(schema)
    except Exception as exc:  # noqa: BLE001 - any failure is the finding to report
        return [f"Params has no valid JSON Schema: {exc}"]
    try:
        defaults = experiment.Params().model_dump(mode="json")
        jsonschema.validate(defaults, schema)
    except Exception as exc:  # noqa: BLE001
        errors.append(f"Params() with its defaults is not valid: {str(exc).splitlines()[0]}")
    if "tiny" not in experiment.presets:
        errors.append("has no 'tiny' preset: every plugin offers one (what tests and quick demos run)")
    for name, preset in experiment.presets.items():
        try:
            experiment.Params.model_validate(preset)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"preset {name!r} is not valid Params: {str(exc).splitlines()[0]}")
    return errors


def check_value(metric: Metric, arm: str, value: Any) -> ResultRow:
    """One value against its metric's declaration (scale, time to event); a ContractError says why."""
    where = f"metric {metric.name!r} of arm {arm!r}"
    if isinstance(value, NotReached):
        if not metric.time_to_event:
            raise ContractError(
                f"{where} is not a time-to-event metric, so it cannot be 'not reached' (NotReached)"
            )
        try:
            budget = float(value.budget)
        except (TypeError, ValueError, OverflowError):
            raise ContractError(f"{where}: the NotReached budget is not a number: {value.budget!r:.50}") from None
        if not math.isfinite(budget) or budget <= 0:
            raise ContractError(f"{where}: the NotReached budget must be finite and > 0, not {budget}")
        return ResultRow(arm, metric.name, metric.version, budget, True)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ContractError(f"{where} is not a number: {value!r:.50}") from None
    if not math.isfinite(number):
        raise ContractError(f"{where} is not finite: {number}")
    if metric.scale == Scale.RATIO and number <= 0:
        raise ContractError(f"{where} is on the ratio scale and must be > 0, not {number}")
    if metric.scale == Scale.PROPORTION and not 0.0 <= number <= 1.0:
        raise ContractError(f"{where} is a proportion and must be within [0, 1], not {number}")
    return ResultRow(arm, metric.name, metric.version, number, False)


def validate_results(experiment: type[Experiment], results: Any) -> list[ResultRow]:
    """Rule 4: check what ``run`` returned as a worker does; a ContractError names the arm and metric."""
    if not isinstance(results, dict):
        raise ContractError("run() must return {arm: {metric: value}}")
    declared = {m.name: m for m in experiment.metrics}
    rows = []
    for arm in experiment.arms:
        values = results.get(arm)
        if not isinstance(values, dict):
            raise ContractError(f"run() returned no results for arm {arm!r}")
        undeclared = set(values) - set(declared)
        if undeclared:
            raise ContractError(f"run() returned undeclared metrics {sorted(undeclared)} for arm {arm!r}")
        missing = set(declared) - set(values)
        if missing:
            raise ContractError(f"run() returned no value for {sorted(missing)} in arm {arm!r}")
        for name, value in values.items():
            rows.append(check_value(declared[name], arm, value))
    extra_arms = set(results) - set(experiment.arms)
    if extra_arms:
        raise ContractError(f"run() returned undeclared arms {sorted(extra_arms, key=str)}")
    return rows


def _progress_errors(ctx: Any, what: str) -> list[str]:
    if not ctx.progress_log:
        return [f"{what} never called ctx.progress(): the registry shows no progress"]
    if abs(ctx.progress_log[-1][0] - 1.0) > 0.02:
        return [f"{what} ended with progress {ctx.progress_log[-1][0]:.2f}, not 1.0"]
    return []


def batched_seeds_errors(
    experiment: type[Experiment], *, preset: str = "tiny", seeds: Sequence[int] = (0, 1, 2), device: str = "cpu",
    alone: dict[int, Any] | None = None,
) -> list[str]:
    """Rule 6: ``run_seeds`` on ``seeds`` (batched) against ``run`` on each seed alone; the
    problems found, empty when they agree within the plugin's ``batched_seeds_tolerance`` (and
    for a plugin that does not opt in). ``alone``: results of ``run`` already known, by seed (not
    run again). Runs the preset up to ``2 * len(seeds)`` times; needs torch."""
    from interp_registry.sdk import run_locally, run_seeds_locally

    if not getattr(experiment, "batched_seeds", False):
        return []
    tolerance = float(experiment.batched_seeds_tolerance)
    try:
        batched = run_seeds_locally(experiment, preset=preset, seeds=seeds, device=device, batched=True, validate=False)
    except Exception as exc:  # noqa: BLE001 - a crash is a finding to report
        return [f"run_seeds() with the {preset!r} preset on seeds {list(seeds)} raised {exc!r}"]
    problems: list[str] = []
    for seed, (results, ctx) in zip(seeds, batched, strict=True):
        try:
            validate_results(experiment, results)
        except ContractError as exc:
            problems.append(f"run_seeds(), seed {seed}: {exc}")
            continue
        problems += _progress_errors(ctx, f"run_seeds(), seed {seed},")
        single = (alone or {}).get(seed)
        if single is None:
            try:
                single, _ = run_locally(experiment, preset=preset, seed=seed, device=device, validate=False)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"run() with the {preset!r} preset, seed {seed}, raised {exc!r}")
                continue
        for arm in experiment.arms:
            for metric in experiment.metrics:
                a, b = single.get(arm, {}).get(metric.name), results[arm][metric.name]
                where = f"seed {seed}, arm {arm!r}, metric {metric.name!r}"
                if isinstance(a, NotReached) or isinstance(b, NotReached):
                    if not (isinstance(a, NotReached) and isinstance(b, NotReached) and a.budget == b.budget):
                        problems.append(f"{where}: run_seeds() gave {b!r}, run() alone gave {a!r}")
                    continue
                try:
                    a, b = float(a), float(b)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    problems.append(f"{where}: run() alone gave {a!r}")
                    continue
                if not abs(b - a) <= tolerance * max(1.0, abs(a)):
                    problems.append(
                        f"{where}: run_seeds() gave {b!r}, run() alone gave {a!r} "
                        f"(beyond batched_seeds_tolerance {tolerance:g})"
                    )
    return problems


def check_plugin(
    experiment: type[Experiment], *, run: bool = True, preset: str = "tiny", seed: int = 0, device: str = "cpu"
) -> list[str]:
    """Every contract rule; with ``run`` the ``preset`` is run once (rules 4 and 5), and for a
    plugin that trains seeds in parallel, rule 6 on seeds ``seed`` and ``seed + 1``. Returns the
    problems found, empty when the plugin passes. Running needs torch."""
    problems = declaration_errors(experiment)
    if problems:  # nothing else can be trusted to work
        return problems
    problems += documentation_errors(experiment)
    problems += params_errors(experiment)
    if run and preset in experiment.presets:
        from interp_registry.sdk import run_locally

        try:
            results, ctx = run_locally(experiment, preset=preset, seed=seed, device=device, validate=False)
        except Exception as exc:  # noqa: BLE001 - a crash is a finding to report
            return [*problems, f"run() with the {preset!r} preset raised {exc!r}"]
        try:
            validate_results(experiment, results)
        except ContractError as exc:
            problems.append(str(exc))
        problems += _progress_errors(ctx, "run()")
        problems += batched_seeds_errors(
            experiment, preset=preset, seeds=(seed, seed + 1), device=device, alone={seed: results}
        )
    return problems


def assert_contract(experiment: type[Experiment], **options: Any) -> None:
    """:func:`check_plugin` for pytest: an AssertionError listing every problem."""
    problems = check_plugin(experiment, **options)
    if problems:
        raise AssertionError(
            f"{getattr(experiment, '__qualname__', experiment)} breaks the plugin contract:\n  - "
            + "\n  - ".join(problems)
        )
