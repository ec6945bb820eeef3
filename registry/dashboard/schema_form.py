"""Form fields for an experiment's parameters, generated from its plugin's JSON Schema (pydantic's
``model_json_schema``, what ``interp_registry.sdk.Experiment.params_schema`` returns).

The fields only *show and read* the parameters: types become inputs (integer and number: number
inputs; boolean: a checkbox; an enum: a select; arrays, objects and unions: JSON text), bounds
become ``min``/``max`` hints, defaults fill the fields, descriptions become help text. They do not
validate: what they read goes, as the API's would, through ``experiment_create`` to the plugin's
pydantic model, and the errors pydantic reports (``params.<name>``) are put back beside their
fields by ``param_errors``. Text is handed over as typed ("5", "0.01"): pydantic reads numbers
from text the same as from JSON numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from django import forms

PARAM_PREFIX = "params."
_MISSING = object()


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a plugin, as the form shows it."""

    name: str
    kind: str  # "integer" | "number" | "boolean" | "enum" | "string" | "json"
    title: str = ""
    description: str = ""
    default: Any = _MISSING
    nullable: bool = False
    required: bool = False
    choices: tuple[Any, ...] = ()
    bounds: dict[str, Any] = field(default_factory=dict)

    @property
    def field_name(self) -> str:
        return PARAM_PREFIX + self.name

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING


def _resolve(prop: Any, defs: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """A property with its ``$ref`` (and a single-item ``allOf``) followed into ``$defs``."""
    if not isinstance(prop, dict) or depth > 10:
        return {}
    if "$ref" in prop and isinstance(prop["$ref"], str):
        target = defs.get(prop["$ref"].rsplit("/", 1)[-1])
        merged = {**_resolve(target, defs, depth + 1), **{k: v for k, v in prop.items() if k != "$ref"}}
        return merged
    all_of = prop.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1:
        return {**_resolve(all_of[0], defs, depth + 1), **{k: v for k, v in prop.items() if k != "allOf"}}
    return prop


BOUND_KEYS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minLength", "maxLength",
              "minItems", "maxItems", "pattern")


def _spec(name: str, prop: dict[str, Any], defs: dict[str, Any], required: bool) -> ParamSpec:
    prop = _resolve(prop, defs)
    nullable = False
    body = prop
    options = prop.get("anyOf") or prop.get("oneOf")
    if isinstance(options, list):
        resolved = [_resolve(option, defs) for option in options]
        not_null = [option for option in resolved if option.get("type") != "null"]
        nullable = len(not_null) < len(resolved)
        body = {**not_null[0], **{k: v for k, v in prop.items() if k not in ("anyOf", "oneOf")}} if len(
            not_null) == 1 else {}
    kind_name = body.get("type")
    if isinstance(kind_name, list):
        nullable = nullable or "null" in kind_name
        kinds = [k for k in kind_name if k != "null"]
        kind_name = kinds[0] if len(kinds) == 1 else None
    if isinstance(body.get("enum"), list) and body["enum"]:
        kind, choices = "enum", tuple(body["enum"])
    elif kind_name in ("integer", "number", "boolean", "string"):
        kind, choices = kind_name, ()
    else:
        kind, choices = "json", ()
    return ParamSpec(
        name=name,
        kind=kind,
        title=str(prop.get("title") or name.replace("_", " ").capitalize()),
        description=str(prop.get("description") or ""),
        default=prop.get("default", _MISSING),
        nullable=nullable,
        required=required,
        choices=choices,
        bounds={key: body[key] for key in BOUND_KEYS if key in body},
    )


def param_specs(schema: Any) -> list[ParamSpec]:
    """The parameters of a JSON Schema object, in its order; [] for anything else."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return []
    defs = schema.get("$defs") or schema.get("definitions") or {}
    required = set(schema.get("required") or [])
    return [_spec(str(name), prop, defs, name in required) for name, prop in schema["properties"].items()]


def _text(value: Any) -> str:
    """A parameter value as the form shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value)


def _bounds_text(spec: ParamSpec) -> str:
    words = {
        "minimum": "at least", "exclusiveMinimum": "greater than", "maximum": "at most",
        "exclusiveMaximum": "less than", "minLength": "at least {} characters", "maxLength": "at most {} characters",
        "minItems": "at least {} items", "maxItems": "at most {} items", "pattern": "matching {}",
    }
    parts = []
    for key, value in spec.bounds.items():
        word = words[key]
        parts.append(word.format(value) if "{}" in word else f"{word} {value}")
    return ", ".join(parts)


def help_text(spec: ParamSpec) -> str:
    parts = [spec.description.rstrip(".") + "." if spec.description else ""]
    bounds = _bounds_text(spec)
    if bounds:
        parts.append(bounds[0].upper() + bounds[1:] + ".")
    if spec.kind == "json":
        parts.append("JSON.")
    if spec.has_default:
        parts.append(f"Default: {json.dumps(spec.default)}.")
    elif spec.required:
        parts.append("Required.")
    if spec.nullable:
        parts.append("Empty: none.")
    return " ".join(p for p in parts if p)


def _number_attrs(spec: ParamSpec) -> dict[str, Any]:
    attrs: dict[str, Any] = {"step": "1" if spec.kind == "integer" else "any"}
    for key, html in (("minimum", "min"), ("maximum", "max")):
        value = spec.bounds.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            attrs[html] = value
    if spec.kind == "integer":  # an exclusive bound of an integer is the next integer in
        low, high = spec.bounds.get("exclusiveMinimum"), spec.bounds.get("exclusiveMaximum")
        if isinstance(low, int) and not isinstance(low, bool):
            attrs["min"] = low + 1
        if isinstance(high, int) and not isinstance(high, bool):
            attrs["max"] = high - 1
    return attrs


def param_field(spec: ParamSpec) -> forms.Field:
    """The form field of one parameter. No validators: pydantic (through the service) decides."""
    common = {"label": spec.title, "help_text": help_text(spec), "required": False}
    if spec.kind == "boolean":
        return forms.BooleanField(**common)
    if spec.kind == "enum":
        choices = [(_text(choice), _text(choice)) for choice in spec.choices]
        if spec.nullable or not spec.has_default:
            choices.insert(0, ("", "—"))
        return forms.CharField(widget=forms.Select(choices=choices), strip=False, **common)
    if spec.kind in ("integer", "number"):
        return forms.CharField(widget=forms.NumberInput(attrs=_number_attrs(spec)), **common)
    attrs = {"spellcheck": "false"} if spec.kind == "json" else {}
    if spec.kind == "string" and isinstance(spec.bounds.get("maxLength"), int):
        attrs["maxlength"] = spec.bounds["maxLength"]
    return forms.CharField(widget=forms.TextInput(attrs=attrs), strip=spec.kind == "json", **common)


def param_initial(specs: list[ParamSpec], values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fields' starting values: the defaults, overlaid with ``values`` (a preset, or parameters
    to start from)."""
    values = values if isinstance(values, dict) else {}
    initial: dict[str, Any] = {}
    for spec in specs:
        value = values.get(spec.name, spec.default)
        if value is _MISSING:
            continue
        initial[spec.field_name] = bool(value) if spec.kind == "boolean" else _text(value)
    return initial


def param_values(specs: list[ParamSpec], cleaned: dict[str, Any]) -> dict[str, Any]:
    """The parameters read from the form's cleaned data, for the plugin's pydantic model: an empty
    field is left out (its default applies); text goes as typed (JSON text parsed, and handed over
    unparsed when it is not JSON, for pydantic to refuse beside its field)."""
    params: dict[str, Any] = {}
    for spec in specs:
        value = cleaned.get(spec.field_name)
        if spec.kind == "boolean":
            params[spec.name] = bool(value)
            continue
        if value is None or value == "":
            continue
        if spec.kind == "json" or (spec.kind == "enum" and not all(isinstance(c, str) for c in spec.choices)):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        params[spec.name] = value
    return params


def param_errors(errors: dict[str, Any]) -> dict[str, list[str]]:
    """pydantic's errors as the service reports them (``{"params.steps": [...]}``, nested locations
    like ``params.noise.0`` included) by form field; errors of the whole model under ``params``."""
    by_field: dict[str, list[str]] = {}
    for location, messages in (errors or {}).items():
        parts = str(location).split(".")
        name = PARAM_PREFIX + parts[1] if len(parts) > 1 and parts[0] == "params" else "params"
        detail = ".".join(parts[2:])
        items = messages if isinstance(messages, list) else [messages]
        by_field.setdefault(name, []).extend(f"{detail}: {m}" if detail else str(m) for m in items)
    return by_field
