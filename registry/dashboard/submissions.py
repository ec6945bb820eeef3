"""Writes from the dashboard's forms, through the API's own path: the form's values in the API's
shape are validated by the API's serializer, then written by the same service function the API
calls. No rule lives here; the errors of either come back beside the form's fields.

Each function returns the object written, or None with the errors added to the form (and the HTTP
status the page should answer with in ``Outcome.status``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.http import HttpRequest

from plugins.registry import all_plugins
from registry.api import serializers as s
from registry.dashboard.forms import XRISK_PREFIX, ClaimForm, ExperimentForm, FindingForm, RetractForm
from registry.dashboard.schema_form import ParamSpec, param_errors, param_specs, param_values
from registry.errors import ApplicationError
from registry.findings import services as finding_services
from registry.findings.markdown import render_markdown
from registry.findings.models import Claim, Finding
from registry.findings.selectors import finding_list, finding_search_filter
from registry.reproductions import services as repro_services
from registry.reproductions.models import Experiment

BUILDS_ON_RESULTS = 10
PREVIEW_MAX_CHARS = s.SUMMARY_MAX_CHARS


@dataclass
class Outcome:
    obj: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- errors beside their fields


def _messages(value: Any) -> list[str]:
    """DRF's error structure (lists, dicts by index or key) as flat messages."""
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            label = f"item {key + 1}" if isinstance(key, int) else str(key)
            out.extend(f"{label}: {message}" for message in _messages(item))
        return out
    if isinstance(value, (list, tuple)):
        return [message for item in value for message in _messages(item)]
    return [str(value)]


def _by_item(errors: Any, items: Any) -> Any:
    """A list field's errors by index (``{1: [...]}``) keyed by the item itself ("not a slug!")."""
    if not isinstance(errors, dict) or not isinstance(items, list):
        return errors
    return {
        (f"“{items[k]}”" if isinstance(k, int) and 0 <= k < len(items) else k): v for k, v in errors.items()
    }


def add_errors(form: forms.Form, errors: dict[str, Any], *, nested: dict[str, str] | None = None) -> None:
    """Put serializer or service errors beside the form's fields: ``errors[name]`` on the field
    called ``name``; a nested dict under a key of ``nested`` on its ``nested[key] + subkey`` fields
    (the x-risk sheet); anything else at the top of the form."""
    nested = nested or {}
    for name, value in errors.items():
        name = str(name)
        if name in nested and isinstance(value, dict):
            for sub, item in value.items():
                target = nested[name] + str(sub)
                _add(form, target if target in form.fields else None, _messages(item), label=f"{name}.{sub}")
            continue
        _add(form, name if name in form.fields else None, _messages(value), label=name)


def _add(form: forms.Form, name: str | None, messages: list[str], *, label: str) -> None:
    """Add messages to field ``name``, or at the top of the form (None) prefixed with ``label``."""
    for message in messages:
        if name is None and label not in ("", "non_field_errors", "params"):
            message = f"{label}: {message}"
        form.add_error(name, message)


def add_application_error(form: forms.Form, exc: ApplicationError, *, aliases: dict[str, str] | None = None) -> None:
    """A service's ``ApplicationError`` beside its field (its ``extra["errors"]`` too, where
    given: pydantic's errors by parameter)."""
    detailed = exc.extra.get("errors") if isinstance(exc.extra, dict) else None
    if isinstance(detailed, dict) and detailed:
        by_field = param_errors(detailed) if exc.field == "params" else {k: v for k, v in detailed.items()}
        for name, messages in by_field.items():
            target = (aliases or {}).get(name, name)
            _add(form, target if target in form.fields else None, _messages(messages), label=name)
        return
    name = (aliases or {}).get(exc.field or "", exc.field or "")
    form.add_error(name if name in form.fields else None, exc.message)


def _status(exc: ApplicationError) -> int:
    return exc.status if 400 <= exc.status < 500 else 400


# ---------------------------------------------------------------- findings


def finding_save(*, form: FindingForm, request: HttpRequest, finding: Finding | None = None) -> Outcome:
    """Create a finding (the signed-in user its first author), or update one: as ``POST`` /
    ``PUT /api/findings/`` would."""
    if not form.is_valid():
        return Outcome(status=400)
    data = form.api_data()
    serializer = s.FindingSerializer(instance=finding, data=data, context={"request": request})
    if not serializer.is_valid():
        errors = {name: _by_item(value, data.get(name)) for name, value in serializer.errors.items()}
        add_errors(form, errors, nested={"xrisk_sheet": XRISK_PREFIX})
        return Outcome(status=400)
    try:
        if finding is None:
            obj = finding_services.finding_create(user=request.user, **serializer.validated_data)
        else:
            obj = finding_services.finding_update(finding=finding, user=request.user, data=serializer.validated_data)
    except ApplicationError as exc:
        add_application_error(form, exc)
        return Outcome(status=_status(exc))
    return Outcome(obj=obj, status=201 if finding is None else 200)


def builds_on_choices(*, user: Any, query: str = "", selected: list[Any] = (), exclude: int | None = None) -> dict:
    """For the builds-on picker: the selected findings (those the user may see) and up to
    ``BUILDS_ON_RESULTS`` others matching ``query`` (title or summary words)."""
    visible = finding_list(user=user)
    ids = [int(v) for v in selected if str(v).isascii() and str(v).isdigit() and len(str(v)) < 19]
    chosen = list(visible.filter(pk__in=ids).only("pk", "title", "kind")) if ids else []
    matches: list[Finding] = []
    query = (query or "").strip()[:200]
    if query:
        found = finding_search_filter(visible, query).exclude(pk__in=[f.pk for f in chosen])
        if exclude is not None:
            found = found.exclude(pk=exclude)
        matches = list(found.only("pk", "title", "kind").order_by("-created_at", "-id")[:BUILDS_ON_RESULTS])
    return {"selected": chosen, "matches": matches, "query": query}


def summary_preview(text: Any) -> str | None:
    """The summary as the finding page will show it (the same Markdown and sanitising); None when
    too long to preview."""
    text = text if isinstance(text, str) else ""
    if len(text) > PREVIEW_MAX_CHARS:
        return None
    return render_markdown(text.replace("\x00", ""), cache=False)  # a draft: not kept in the cache


# ---------------------------------------------------------------- plugins


def available_plugins() -> list[str]:
    return sorted(name for name, entry in all_plugins().items() if entry.available)


def plugin_or_default(name: Any, *, finding: Finding | None = None) -> str | None:
    """``name`` when it is an available plugin, else the first plugin of the finding's experiments,
    else the first available plugin."""
    names = available_plugins()
    if isinstance(name, str) and name in names:
        return name
    if finding is not None:
        used = [p for p in finding.experiments.order_by("id").values_list("plugin", flat=True) if p in names]
        if used:
            return used[0]
    return names[0] if names else None


def plugin_metrics(name: str | None) -> list[dict[str, Any]]:
    entry = all_plugins().get(name or "")
    if entry is None or not entry.available:
        return []
    return [
        {"name": m.name, "axis": getattr(m.axis, "value", str(m.axis)), "higher_is_better": m.higher_is_better,
         "unit": m.unit, "description": m.description, "scale": str(getattr(m.scale, "value", m.scale) or "")}
        for m in entry.experiment.metrics
    ]


def plugin_arms(name: str | None) -> list[str]:
    entry = all_plugins().get(name or "")
    return list(entry.experiment.arms) if entry is not None and entry.available else []


def plugin_form_parts(name: str | None, preset: Any = "") -> tuple[list[ParamSpec], list[str], dict[str, Any]]:
    """(the parameter fields' specs from the plugin's JSON Schema, its preset names, the values to
    start from: the preset's, when ``preset`` names one)."""
    entry = all_plugins().get(name or "")
    if entry is None or not entry.available:
        return [], [], {}
    plugin = entry.experiment
    try:
        specs = param_specs(plugin.params_schema())
    except Exception:  # noqa: BLE001 - a broken plugin's schema: no fields, the service says why
        specs = []
    presets = plugin.presets if isinstance(plugin.presets, dict) else {}
    start = presets.get(preset) if isinstance(preset, str) and preset else None
    return specs, sorted(presets), dict(start) if isinstance(start, dict) else {}


def experiment_form(
    *, data: Any = None, finding: Finding | None, plugin: Any = None, preset: Any = ""
) -> ExperimentForm:
    name = plugin_or_default(plugin, finding=finding)
    specs, presets, start = plugin_form_parts(name, preset)
    initial = {"plugin": name or "", "preset": preset if preset in presets else ""}
    return ExperimentForm(data, plugins=available_plugins(), specs=specs, presets=presets, start=start,
                          initial=initial)


def claim_form(*, data: Any = None, finding: Finding | None, plugin: Any = None) -> ClaimForm:
    name = plugin_or_default(plugin, finding=finding)
    return ClaimForm(data, plugins=available_plugins(), metrics=plugin_metrics(name), initial={"plugin": name or ""})


# ---------------------------------------------------------------- claims and experiments


def claim_add(*, form: ClaimForm, request: HttpRequest, finding: Finding) -> Outcome:
    """Add a claim as ``POST /api/findings/{id}/claims/`` would."""
    if not form.is_valid():
        return Outcome(status=400)
    serializer = s.ClaimSerializer(data=form.api_data(), context={"finding": finding})
    if not serializer.is_valid():
        add_errors(form, serializer.errors)
        return Outcome(status=400)
    try:
        claim: Claim = finding_services.claim_create(finding=finding, user=request.user, **serializer.validated_data)
    except ApplicationError as exc:
        add_application_error(form, exc)
        return Outcome(status=_status(exc))
    return Outcome(obj=claim, status=201)


def experiment_add(*, form: ExperimentForm, request: HttpRequest, finding: Finding) -> Outcome:
    """Add an experiment as ``POST /api/findings/{id}/experiments/`` would (its first reproduction
    queued when asked, within the same rate limit and quota)."""
    from registry.api.throttling import ReproductionRateThrottle, throttle_wait

    if not form.is_valid():
        return Outcome(status=400)
    data = form.api_data(param_values(form.specs, form.cleaned_data))
    preset = form.cleaned_data.get("preset")
    if preset and "preset" in s.ExperimentSerializer().fields:  # where the API takes a preset, so does the form
        data["preset"] = preset
    serializer = s.ExperimentSerializer(data=data)
    if not serializer.is_valid():
        errors = dict(serializer.errors)
        if isinstance(errors.get("params"), dict):
            for name, messages in param_errors({f"params.{k}": v for k, v in errors.pop("params").items()}).items():
                _add(form, name if name in form.fields else None, _messages(messages), label=name)
        add_errors(form, errors)
        return Outcome(status=400)
    if serializer.validated_data.get("reproduce"):
        wait = throttle_wait(request, ReproductionRateThrottle)
        if wait is not None:
            form.add_error("reproduce", f"Too many reproduction requests: please wait {wait} s, or add the "
                           "experiment without queuing runs.")
            return Outcome(status=429, headers={"Retry-After": str(wait)})
    try:
        experiment: Experiment = repro_services.experiment_create(
            finding=finding, user=request.user, **serializer.validated_data
        )
    except ApplicationError as exc:
        add_application_error(form, exc)
        headers = {"Retry-After": exc.headers["Retry-After"]} if "Retry-After" in getattr(exc, "headers", {}) else {}
        return Outcome(status=_status(exc), headers=headers)
    return Outcome(obj=experiment, status=201)


def experiment_retract(*, form: RetractForm, request: HttpRequest, experiment: Experiment) -> Outcome:
    """Retract as ``POST /api/experiments/{id}/retract/`` would."""
    if not form.is_valid():
        return Outcome(status=400)
    try:
        obj = finding_services.experiment_retract(
            experiment=experiment, user=request.user, reason=form.cleaned_data.get("reason")
        )
    except ApplicationError as exc:
        add_application_error(form, exc)
        return Outcome(status=_status(exc))
    return Outcome(obj=obj)
