"""Findings as code: a finding, its claims, experiments and ``builds_on`` links in a YAML file.

The format is the JSON Schema shipped beside this module (``finding.schema.json``,
:func:`schema`); an example::

    key: resize-conv-checkerboard          # stable identity across submissions
    title: Resize-convolution removes checkerboard artifacts
    kind: fix                              # theory | fix | observation
    summary: Nearest-neighbour resize then convolution instead of a transposed convolution.
    tags: [checkerboard, vision]
    references: ["https://distill.pub/2016/deconv-checkerboard/"]
    builds_on: [deconv-overlap-theory, 12] # keys of findings submitted as code, or finding ids
    claims:
      - metric: checkerboard_energy
        direction: decrease
        min_relative_effect: 0.9
      - metric: pooled_mse
        direction: non_inferior
        margin: 0.05
    experiments:
      - plugin: checkerboard
        preset: tiny                       # optional: start from a preset of the plugin
        params: {steps: 300}
        default_seeds: 3
        reproduce: true                    # queue a first reproduction on creation (the default)

:func:`load` parses and checks a file (an error names the line, column and field);
:func:`check_against_plugins` checks its experiments against the plugins' parameter schemas;
:func:`submit` creates or updates the finding so that submitting the same file twice changes nothing.

The registry has no field for an external key, so the key is stored as the tag ``key-<key>`` on the
finding, and a submission finds "its" finding by that tag (among findings the token may read). A
finding whose tag was removed by hand is no longer found: the next submission creates a new one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from interp_registry.client import Claim, Finding, Plugin, Registry

KEY_TAG_PREFIX = "key-"
FINDING_FIELDS = ("title", "kind", "summary", "references", "visibility")
CLAIM_FIELDS = ("direction", "min_relative_effect", "margin", "threshold_unit", "statement")
CLAIM_DEFAULTS = {"min_relative_effect": None, "margin": None, "threshold_unit": "relative", "statement": ""}


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema of a finding file."""
    return json.loads(resources.files("interp_registry").joinpath("finding.schema.json").read_text())


@dataclass(frozen=True)
class FieldError:
    line: int  # 1-based; 0 when unknown
    column: int
    field: str  # e.g. experiments[0].params.steps
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line else ""
        return f"{where}{self.field or '(top level)'}: {self.message}"


class FindingFileError(ValueError):
    """A finding file that is not valid; ``errors`` lists each problem with its line and field."""

    def __init__(self, path: str, errors: list[FieldError]):
        self.path = path
        self.errors = errors
        super().__init__("\n".join(f"{path}, {e}" for e in errors))


@dataclass
class FindingFile:
    path: str
    data: dict[str, Any]
    marks: dict[tuple, tuple[int, int]] = field(default_factory=dict)  # JSON path -> (line, column), 1-based

    @property
    def key(self) -> str:
        return self.data["key"]

    def where(self, path: tuple) -> tuple[int, int]:
        """The line and column of the value at ``path`` (or of its closest parent in the file)."""
        while path and path not in self.marks:
            path = path[:-1]
        return self.marks.get(path, (0, 0))

    def error(self, path: tuple, message: str) -> FieldError:
        line, column = self.where(path)
        return FieldError(line, column, dotted(path), message)


def dotted(path: tuple | list) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _marks(node: yaml.Node, path: tuple, marks: dict[tuple, tuple[int, int]], errors: list[FieldError]) -> None:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            child = (*path, key)
            if key in seen:
                errors.append(FieldError(key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                         dotted(child), "duplicate key: given twice in one mapping"))
            seen.add(key)
            _marks(value_node, child, marks, errors)
            # a key's own position, for "unknown field" errors
            marks[(*child, "__key__")] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _marks(item, (*path, index), marks, errors)


def parse(text: str, path: str = "<finding>") -> FindingFile:
    """Parse and check a finding file's text against the JSON Schema (not yet against the plugins)."""
    import jsonschema

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise FindingFileError(path, [FieldError(line, column, "", f"not valid YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise FindingFileError(path, [FieldError(0, 0, "", f"not valid YAML: {exc}")]) from None
    if not isinstance(data, dict) or node is None:
        raise FindingFileError(path, [FieldError(1, 1, "", "a finding file is a mapping (key: value lines)")])
    errors: list[FieldError] = []
    marks: dict[tuple, tuple[int, int]] = {}
    _marks(node, (), marks, errors)
    finding = FindingFile(path=path, data=data, marks=marks)
    validator = jsonschema.Draft202012Validator(schema())
    for error in sorted(validator.iter_errors(data), key=lambda e: finding.where(tuple(e.absolute_path))):
        location = tuple(error.absolute_path)
        message = error.message
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            location = (*location, missing) if missing else location
            message = "required field is missing"
        elif error.validator == "additionalProperties":
            extra = [k for k in (error.instance or {}) if k not in (error.schema.get("properties") or {})]
            for name in extra:
                line, column = marks.get((*location, name, "__key__"), finding.where(location))
                allowed = ", ".join(sorted(error.schema.get("properties") or {}))
                errors.append(FieldError(line, column, dotted((*location, name)),
                                         f"unknown field (allowed: {allowed})"))
            continue
        elif error.validator == "oneOf" and location and location[0] == "builds_on":
            message = "a finding key (lower-case letters, digits, '-', '_') or a finding id (a whole number)"
        elif error.validator == "not" and location and location[0] == "tags":
            message = "tags starting with 'key-' are reserved for the finding's key"
        errors.append(FieldError(*finding.where(location), dotted(location), message))
    claims = data.get("claims")
    if isinstance(claims, list):
        seen: dict[str, int] = {}
        for index, claim in enumerate(claims):
            metric = claim.get("metric") if isinstance(claim, dict) else None
            if isinstance(metric, str):
                if metric in seen:
                    message = f"a second claim on {metric!r} (claims[{seen[metric]}]): one claim per metric"
                    errors.append(finding.error(("claims", index, "metric"), message))
                seen.setdefault(metric, index)
    if errors:
        raise FindingFileError(path, sorted(errors, key=lambda e: (e.line, e.column)))
    return finding


def load(path: str | Path) -> FindingFile:
    """Read and check a finding file (see :func:`parse`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FindingFileError(str(path), [FieldError(0, 0, "", f"cannot be read: {exc}")]) from None
    return parse(text, str(path))


def resolved_params(experiment: dict[str, Any], plugin: Plugin | None) -> dict[str, Any]:
    """An experiment's parameters: its preset's (from the plugin's declaration) overridden by ``params``."""
    params: dict[str, Any] = {}
    preset = experiment.get("preset")
    if preset and plugin is not None:
        params.update(plugin.presets.get(preset) or {})
    params.update(experiment.get("params") or {})
    return params


def check_against_plugins(finding: FindingFile, plugins: dict[str, Plugin]) -> None:
    """Check each experiment against its plugin (known, available, preset declared, params valid by
    the plugin's JSON Schema) and each claim's metric against the experiments' plugins."""
    import jsonschema

    errors: list[FieldError] = []
    metrics: set[str] = set()
    for index, experiment in enumerate(finding.data.get("experiments") or []):
        name = experiment["plugin"]
        plugin = plugins.get(name)
        if plugin is None:
            errors.append(finding.error(("experiments", index, "plugin"),
                                        f"no plugin called {name!r} on the registry (it has {sorted(plugins)})"))
            continue
        if not plugin.available:
            errors.append(finding.error(("experiments", index, "plugin"),
                                        f"plugin {name!r} is unavailable on the registry: {plugin.error}"))
            continue
        metrics.update(m.get("name") for m in plugin.metrics)
        preset = experiment.get("preset")
        if preset is not None and preset not in plugin.presets:
            errors.append(finding.error(("experiments", index, "preset"),
                                        f"plugin {name!r} has no preset {preset!r} (it has {sorted(plugin.presets)})"))
            continue
        params = resolved_params(experiment, plugin)
        validator = jsonschema.Draft202012Validator(plugin.params_schema)
        for error in validator.iter_errors(params):
            location = ("experiments", index, "params", *error.absolute_path)
            message = error.message
            if error.validator == "additionalProperties":
                known = ", ".join(sorted(plugin.params_schema.get("properties", {})))
                message = f"{message} (parameters of {name!r}: {known})"
            errors.append(finding.error(location, message))
    if finding.data.get("experiments"):
        for index, claim in enumerate(finding.data.get("claims") or []):
            if claim["metric"] not in metrics and metrics:
                errors.append(finding.error(("claims", index, "metric"),
                                            f"no experiment's plugin measures {claim['metric']!r} "
                                            f"(they measure {sorted(metrics)})"))
    if errors:
        raise FindingFileError(finding.path, sorted(errors, key=lambda e: (e.line, e.column)))


# ---------------------------------------------------------------- submission


@dataclass
class SubmitResult:
    finding: Finding
    web_url: str
    created: bool = False
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.created or bool(self.changes)

    def to_dict(self) -> dict[str, Any]:
        return {"finding": self.finding.id, "url": self.web_url, "api_url": self.finding.url,
                "created": self.created, "changed": self.changed, "changes": self.changes, "notes": self.notes}


def key_tag(key: str) -> str:
    return f"{KEY_TAG_PREFIX}{key}"


def _content_key(kind: str, *parts: Any) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return f"ifr-submit-{kind}-{digest[:48]}"


def _caller(registry: Registry) -> str | None:
    """The signed-in user's name (None when reading anonymously), asked once per client."""
    if not registry.token:
        return None
    if not hasattr(registry, "_caller_name"):
        quota = registry.request("GET", "me/quota/")
        registry._caller_name = quota.get("user") if isinstance(quota, dict) else None  # type: ignore[attr-defined]
    return registry._caller_name  # type: ignore[attr-defined]


def find_by_key(registry: Registry, key: str) -> Finding | None:
    """The finding carrying the key's tag, among those the caller may read and, when signed in,
    authors (None when there is none): anyone can tag a finding ``key-<key>``, and a stranger's
    finding must neither be taken for the caller's (updated, linked by ``builds_on``) nor block it."""
    tag = key_tag(key)
    matches = [f for f in registry.findings(tag=tag) if tag in f.tags]
    me = _caller(registry)
    if me is not None:
        matches = [f for f in matches if me in f.authors]
    if len(matches) > 1:
        ids = ", ".join(str(f.id) for f in matches)
        raise ValueError(
            f"several findings carry the key {key!r} (tag {tag!r}): {ids}; remove the tag from all but one"
        )
    return matches[0] if matches else None


def _resolve_builds_on(registry: Registry, finding: FindingFile) -> list[int]:
    ids = []
    for index, item in enumerate(finding.data.get("builds_on") or []):
        if isinstance(item, int):
            ids.append(item)
            continue
        parent = find_by_key(registry, item)
        if parent is None:
            raise FindingFileError(finding.path, [finding.error(
                ("builds_on", index), f"no finding with the key {item!r} on the registry: submit it first"
            )])
        ids.append(parent.id)
    return sorted(set(ids))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _claim_matches(wanted: dict[str, Any], existing: Claim) -> list[str]:
    differing = []
    for name in CLAIM_FIELDS:
        value = wanted.get(name, CLAIM_DEFAULTS.get(name))
        if not _same(value, getattr(existing, name)):
            differing.append(name)
    return differing


def _experiment_matches(params: dict[str, Any], plugin: str, existing: Any) -> bool:
    if existing.plugin != plugin or existing.retracted_at:
        return False
    return all(name in existing.params and _same(value, existing.params[name]) for name, value in params.items())


def submit(registry: Registry, finding: FindingFile, *, plugins: dict[str, Plugin] | None = None,
           check: bool = True) -> SubmitResult:
    """Create the finding of ``finding`` or bring the registry's copy up to date with it.

    Identified by its key (the tag ``key-<key>``). Fields, tags and ``builds_on`` are PATCHed only when
    they differ; a claim is matched by its metric (changed fields PATCHed while no run exists, else a
    new version superseding it); an experiment by its plugin and parameters (experiments are never
    edited: a changed one is a new experiment). Claims and experiments on the registry that the file
    no longer lists are left as they are (and reported in ``notes``). Every create carries an
    Idempotency-Key derived from what it creates, so a repeated or concurrent submission of the same
    content creates it once.
    """
    from interp_registry.client import Conflict, NotFound

    if plugins is None:
        plugins = {p.name: p for p in registry.plugins()}
    if check:
        check_against_plugins(finding, plugins)
    data = finding.data
    # the registry stores tags lower-cased: compared (and sent) as it stores them
    tags = sorted({*(str(t).lower() for t in data.get("tags") or []), key_tag(finding.key)})
    body: dict[str, Any] = {name: data[name] for name in FINDING_FIELDS if name in data}
    body["tags"] = tags
    builds_on = _resolve_builds_on(registry, finding)
    if "builds_on" in data:
        body["builds_on"] = builds_on

    result_created = False
    changes: list[str] = []
    notes: list[str] = []
    existing = find_by_key(registry, finding.key)
    if existing is None:
        created = registry.create_finding(idempotency_key=_content_key("finding", body), **body)
        try:  # a replayed answer may name a finding deleted or re-keyed since: then create afresh
            existing = registry.finding(created.id)
        except NotFound:
            existing = None
        if existing is None or key_tag(finding.key) not in existing.tags:
            existing = registry.create_finding(**body)
        result_created = True
        changes.append(f"created finding {existing.id}")
    else:
        patch: dict[str, Any] = {}
        for name in FINDING_FIELDS:
            if name in data and not _same(data[name], getattr(existing, name)):
                patch[name] = data[name]
        if sorted(existing.tags) != tags:
            patch["tags"] = tags
        if "builds_on" in data and sorted(existing.builds_on) != builds_on:
            patch["builds_on"] = builds_on
        if patch:
            existing = registry.update_finding(existing.id, **patch)
            changes.append(f"updated finding {existing.id}: {', '.join(sorted(patch))}")

    # claims, matched by metric
    current = {c.metric: c for c in registry.claims(existing.id)}
    listed = set()
    for wanted in data.get("claims") or []:
        metric = wanted["metric"]
        listed.add(metric)
        fields = {name: wanted[name] for name in CLAIM_FIELDS if name in wanted}
        claim = current.get(metric)
        if claim is None:
            new = registry.create_claim(existing.id, metric=metric, **fields,
                                        idempotency_key=_content_key("claim", existing.id, metric, fields))
            changes.append(f"created claim {new.id} on {metric}")
            continue
        differing = _claim_matches(wanted, claim)
        if not differing:
            continue
        patch = {name: wanted.get(name, CLAIM_DEFAULTS.get(name)) for name in differing}
        try:
            registry.update_claim(claim.id, **patch)
            changes.append(f"updated claim {claim.id} on {metric}: {', '.join(differing)}")
        except Conflict:
            # fixed once runs exist (409): a new version supersedes it
            new = registry.create_claim(existing.id, metric=metric, supersedes=claim.id, **fields,
                                        idempotency_key=_content_key("claim", existing.id, metric, fields, claim.id))
            changes.append(f"claim {claim.id} on {metric} superseded by claim {new.id} ({', '.join(differing)})")
    for metric in sorted(set(current) - listed):
        notes.append(f"claim {current[metric].id} on {metric} is not in the file: left as it is")

    # experiments, matched by plugin and parameters
    on_registry = [e for e in registry.experiments(existing.id)]
    matched: set[int] = set()
    for experiment in data.get("experiments") or []:
        plugin = plugins.get(experiment["plugin"])
        params = resolved_params(experiment, plugin)
        match = next((e for e in on_registry if e.id not in matched
                      and _experiment_matches(params, experiment["plugin"], e)), None)
        if match is not None:
            matched.add(match.id)
            for name in ("default_seeds", "device", "label"):
                given = experiment.get(name)
                if name in experiment and (given.strip() if isinstance(given, str) else given) != getattr(match, name):
                    notes.append(f"experiment {match.id} has {name}={getattr(match, name)!r}, the file says "
                                 f"{experiment[name]!r}: experiments are not edited (change its params for a new one)")
            continue
        extra = {name: experiment[name] for name in ("label", "default_seeds", "device", "time_limit_s", "reproduce")
                 if name in experiment}
        new = registry.create_experiment(
            existing.id, plugin=experiment["plugin"], params=params, **extra,
            idempotency_key=_content_key("experiment", existing.id, experiment["plugin"], params, extra),
        )
        if any(e.id == new.id for e in on_registry):  # a replay of one retracted since: a new one
            new = registry.create_experiment(existing.id, plugin=experiment["plugin"], params=params, **extra)
        matched.add(new.id)
        changes.append(f"created experiment {new.id} ({new.plugin})"
                       + (f", reproduction {new.reproductions[0]} queued" if new.reproductions else ""))
    for experiment in on_registry:
        if experiment.id not in matched and not experiment.retracted_at:
            notes.append(f"experiment {experiment.id} ({experiment.plugin}) is not in the file: left as it is")

    final = registry.finding(existing.id) if changes else existing
    return SubmitResult(finding=final, web_url=f"{registry.url}/findings/{final.id}/", created=result_created,
                        changes=changes, notes=notes)


def to_yaml(finding: Finding, key: str | None = None) -> str:
    """A registry finding as a finding file (``interp-registry export --format yaml``... or a start)."""
    tags = [t for t in finding.tags if not t.startswith(KEY_TAG_PREFIX)]
    keys = [t[len(KEY_TAG_PREFIX):] for t in finding.tags if t.startswith(KEY_TAG_PREFIX)]
    data: dict[str, Any] = {"key": key or (keys[0] if keys else f"finding-{finding.id}"), "title": finding.title,
                            "kind": finding.kind}
    if finding.summary:
        data["summary"] = finding.summary
    if tags:
        data["tags"] = tags
    if finding.references:
        data["references"] = finding.references
    if finding.builds_on:
        data["builds_on"] = finding.builds_on
    data["claims"] = [
        {"metric": c.metric, "direction": c.direction,
         **{n: getattr(c, n) for n in CLAIM_FIELDS[1:] if getattr(c, n) not in (None, "", "relative")}}
        for c in finding.claims
    ]
    data["experiments"] = [
        {"plugin": e.plugin, **({"label": e.label} if e.label else {}), "params": e.params,
         "default_seeds": e.default_seeds, "device": e.device}
        for e in finding.experiments if not e.retracted_at
    ]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
