"""Self-reported results: an author posts the measurements of one run executed on their own
cluster. They land as a ``Reproduction(source=self_reported)`` with one succeeded ``Run``, are
checked exactly like a plugin's output (``validate_results``), and sit on the lowest rung of the
evidence ladder: a verdict from registry runs always outranks them.

Everything is validated before anything is written, and written in one transaction with the
``run.finished`` event and the effects recompute request, so a rejected request leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from plugins.sdk import Experiment as PluginExperiment
from plugins.sdk import NotReached
from registry.effects.services import effects_recompute_request
from registry.errors import ApplicationError, PermissionDenied
from registry.reproductions.models import Experiment, Measurement, Reproduction, Run
from registry.reproductions.quotas import quota_reserve
from registry.reproductions.services import (
    ResultRow,
    check_storable,
    metric_catalogue_sync,
    params_validate,
    plugin_resolve,
    run_event_emit,
    validate_results,
)

MAX_SEED = 2**31 - 1


def ensure_reporting_author(experiment: Experiment, user: Any) -> None:
    """Only the finding's authors report results from their own cluster (staff included only
    when they are authors: the results are the authors' statement)."""
    if not getattr(user, "is_authenticated", False) or not experiment.finding.authors.filter(pk=user.pk).exists():
        raise PermissionDenied("only the finding's authors may report results of their own runs")


def _check_seed(seed: Any) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ApplicationError(f"seed must be an integer between 0 and {MAX_SEED}", field="seed")
    return seed


def _check_hardware(hardware: Any) -> str:
    if not isinstance(hardware, str) or not hardware.strip() or len(hardware) > 200:
        raise ApplicationError("hardware must name the device used ('cpu' or the GPU model)", field="hardware")
    return hardware.strip()


def _check_params(plugin: type[PluginExperiment], experiment: Experiment, params: Any) -> dict[str, Any]:
    """The run must have used the experiment's parameters (compared after normalisation)."""
    normalised = params_validate(plugin, params)
    try:
        expected = params_validate(plugin, experiment.params)
    except ApplicationError:  # the experiment predates a plugin change; compare as stored
        expected = experiment.params
    if normalised != expected:
        differing = sorted(k for k in set(normalised) | set(expected) if normalised.get(k) != expected.get(k))
        raise ApplicationError(
            f"params differ from the experiment's in {differing}: self-reported runs must use the "
            f"experiment's parameters",
            field="params",
        )
    return normalised


def _check_environment(environment: Any) -> dict[str, Any]:
    if environment is None:
        return {}
    if not isinstance(environment, dict):
        raise ApplicationError("environment must be a JSON object", field="environment")
    check_storable(environment, "environment")
    return environment


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _censored_value(value: dict[str, Any], field: str) -> NotReached:
    """``{"censored": true, "value": <budget>}``: the event was not reached within the budget."""
    if set(value) != {"censored", "value"} or value.get("censored") is not True or not _is_number(value["value"]):
        raise ApplicationError(
            'a censored value must be {"censored": true, "value": <budget>} with a numeric budget', field=field
        )
    return NotReached(budget=value["value"])


def _check_measurements(plugin: type[PluginExperiment], measurements: Any) -> list[ResultRow]:
    """Type check ({arm: {metric: number | {"censored": true, "value": budget}}}), then the
    plugin-output check the runner uses."""
    if not isinstance(measurements, dict):
        raise ApplicationError("measurements must be an object {arm: {metric: value}}", field="measurements")
    declared = {m.name: m for m in plugin.metrics}
    converted: dict[str, dict[str, Any]] = {}
    for arm, values in measurements.items():
        if not isinstance(values, dict):
            raise ApplicationError(f"arm {arm!r} must be an object {{metric: value}}", field=f"measurements.{arm}")
        converted[arm] = {}
        for metric, value in values.items():
            field = f"measurements.{arm}.{metric}"
            if isinstance(value, dict):
                definition = declared.get(metric)
                if definition is None or not definition.time_to_event:
                    raise ApplicationError(
                        f"metric {metric!r} of arm {arm!r} is not a time-to-event metric: only those may be "
                        f"censored; give a number",
                        field=field,
                    )
                converted[arm][metric] = _censored_value(value, field)
            elif _is_number(value):
                converted[arm][metric] = value
            else:
                censorable = metric in declared and declared[metric].time_to_event
                or_censored = ' or {"censored": true, "value": <budget>}' if censorable else ""
                raise ApplicationError(f"metric {metric!r} of arm {arm!r} must be a number{or_censored}", field=field)
    try:
        return validate_results(plugin, converted)
    except ValueError as exc:
        message = str(exc).replace("run() returned ", "").replace("run() must return", "measurements must be")
        raise ApplicationError(f"invalid measurements: {message}", field="measurements") from None


def _check_plugin_version(plugin: type[PluginExperiment], plugin_version: Any) -> str:
    if plugin_version in (None, ""):
        return plugin.version
    if not isinstance(plugin_version, str) or len(plugin_version) > 50:
        raise ApplicationError("plugin_version must be a version string", field="plugin_version")
    return plugin_version


def _device_for(hardware: str) -> str:
    return Experiment.Device.CPU if hardware.lower().startswith("cpu") else Experiment.Device.GPU


@transaction.atomic
def self_reported_run_record(
    *,
    experiment: Experiment,
    user: Any,
    seed: Any,
    measurements: Any,
    params: Any,
    hardware: Any,
    environment: Any = None,
    plugin_version: Any = None,
) -> Run:
    """Record one self-reported run of ``experiment`` and request the finding's effects recompute."""
    ensure_reporting_author(experiment, user)
    if experiment.retracted_at is not None:
        raise ApplicationError("this experiment was retracted; it takes no more results", field="experiment")
    plugin = plugin_resolve(experiment.plugin)
    seed = _check_seed(seed)
    hardware = _check_hardware(hardware)
    _check_params(plugin, experiment, params)
    rows = _check_measurements(plugin, measurements)
    environment = _check_environment(environment)
    plugin_version = _check_plugin_version(plugin, plugin_version)

    # Lock order (see effects_recompute_request): the finding's effects row first, then the
    # user's quota row, as experiment_create -> reproduction_request takes them; the reverse order
    # deadlocks against a concurrent experiment_create on the same finding by the same user.
    effects_recompute_request(finding_id=experiment.finding_id)
    # no worker time and never active: the daily quota only (registry.reproductions.quotas)
    quota_reserve(user=user, requested=1, field=None, active=False)
    metric_catalogue_sync(plugin)
    device = _device_for(hardware)
    reproduction = Reproduction.objects.create(
        experiment=experiment, requested_by=user, seeds=[seed], device=device,
        source=Reproduction.Source.SELF_REPORTED,
    )
    now = timezone.now()
    run = Run.objects.create(
        reproduction=reproduction, seed=seed, state=Run.State.SUCCEEDED, queue=device, attempts=1,
        progress=1.0, progress_message="self-reported", started_at=now, finished_at=now,
        plugin_version=plugin_version, hardware=hardware, environment=environment,
    )
    Measurement.objects.bulk_create(
        [
            Measurement(run=run, arm=r.arm, metric=r.metric, metric_version=r.version, value=r.value,
                        censored=r.censored)
            for r in rows
        ]
    )
    run_event_emit("run.finished", run.pk, measurements=len(rows), self_reported=True, hardware=hardware)
    return run
