"""Forms of the dashboard: the GET filters, the reproduction request, and the submit and edit forms
(finding, claim, experiment, retraction)."""

from __future__ import annotations

import re
from datetime import UTC

from django import forms
from django.conf import settings
from django.urls import reverse

from registry.dashboard.schema_form import ParamSpec, param_field, param_initial
from registry.findings.models import Claim, Finding
from registry.reproductions.models import Experiment


def _choices(values: list[str], empty: str) -> list[tuple[str, str]]:
    return [("", empty), *((value, value) for value in values)]


class FindingFilterForm(forms.Form):
    """Search and filters of the findings list. Invalid values are ignored, never an error page."""

    q = forms.CharField(required=False, max_length=200, label="Search",
                        widget=forms.TextInput(attrs={"type": "search", "placeholder": "title or summary"}))
    kind = forms.ChoiceField(required=False, choices=[("", "any kind"), *Finding.Kind.choices])
    status = forms.ChoiceField(required=False, choices=[("", "any status"), *Finding.Status.choices])
    tag = forms.ChoiceField(required=False)
    plugin = forms.ChoiceField(required=False)

    def __init__(self, *args, tags: list[str], plugins: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tag"].choices = _choices(tags, "any tag")
        self.fields["plugin"].choices = _choices(plugins, "any plugin")

    def filters(self) -> dict[str, str]:
        """The valid filters (an unknown tag or kind is dropped rather than failing the page)."""
        if not self.is_bound:
            return {}
        self.is_valid()
        return {name: value for name, value in self.cleaned_data.items() if value}


class LandscapeFilterForm(FindingFilterForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.fields["q"]
        del self.fields["status"]


def reproducible_experiments(finding: Finding):
    """The finding's experiments that may be reproduced: every one not retracted, oldest first."""
    return finding.experiments.filter(retracted_at__isnull=True).order_by("id")


class ReproductionRequestForm(forms.Form):
    experiment = forms.ModelChoiceField(queryset=Experiment.objects.none(), empty_label=None)
    n_seeds = forms.IntegerField(
        label="Number of seeds",
        min_value=1,
        max_value=settings.MAX_SEEDS_PER_REPRODUCTION,
        help_text="One run per seed (seeds 0, 1, 2, …).",
    )

    def __init__(self, *args, finding: Finding, **kwargs):
        super().__init__(*args, **kwargs)
        # A retracted experiment is never reproduced again: it is neither offered nor accepted.
        experiments = reproducible_experiments(finding)
        self.fields["experiment"].queryset = experiments
        self.fields["experiment"].label_from_instance = lambda e: f"#{e.pk} {e.plugin}"
        first = experiments.first()
        if first is not None and not self.is_bound:
            self.initial.setdefault("experiment", first.pk)
            self.initial.setdefault("n_seeds", first.default_seeds)


# ---------------------------------------------------------------- submitting and editing
# These forms show and read; they hold no rule of their own. What they read is put into the
# API's shape (``api_data``) and goes through the API's serializers and services
# (``registry.dashboard.submissions``), whose errors come back beside the fields.

XRISK_PREFIX = "xrisk_"
DUAL_USE_CHOICES = [("", "not said"), ("yes", "yes"), ("no", "no")]


def _split(text: str, separators: str = ",") -> list[str]:
    for separator in separators[1:]:
        text = text.replace(separator, separators[0])
    return [item.strip() for item in text.split(separators[0]) if item.strip()]


def _text_field(label: str, help_text: str = "", *, textarea: bool = False, rows: int = 3, **attrs) -> forms.CharField:
    widget = forms.Textarea(attrs={"rows": rows, **attrs}) if textarea else forms.TextInput(attrs=attrs)
    return forms.CharField(label=label, help_text=help_text, required=False, strip=not textarea, widget=widget)


def _select(label: str, choices: list[tuple[str, str]], help_text: str = "", **attrs) -> forms.CharField:
    return forms.CharField(
        label=label, help_text=help_text, required=False, widget=forms.Select(choices=choices, attrs=attrs)
    )


def _number(label: str, help_text: str = "", **attrs) -> forms.CharField:
    return forms.CharField(label=label, help_text=help_text, required=False, widget=forms.NumberInput(attrs=attrs))


_LOCAL_DATETIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?")


def _as_utc(value: str | None) -> str | None:
    """A datetime-local value (no offset) read as UTC, as the form says, whatever the server's
    TIME_ZONE: ``Z`` appended. Anything else as given (the serializer refuses a bad format)."""
    if value and _LOCAL_DATETIME.fullmatch(value.strip()):
        return value.strip().replace(" ", "T") + "Z"  # "T" or a space (a plain text box) between
    return value


class FindingForm(forms.Form):
    """A finding: create or edit (its authors). The rules are ``FindingSerializer``'s and
    ``finding_create``/``finding_update``'s."""

    title = _text_field("Title", maxlength=Finding._meta.get_field("title").max_length)
    kind = _select("Kind", Finding.Kind.choices, "A theory explains, a fix changes something, an observation reports.")
    summary = _text_field(
        "Summary", "Markdown (sanitised when shown): what was found, how, and what it means.", textarea=True, rows=10
    )
    tags = _text_field("Tags", "Comma-separated slugs, e.g. grokking, weight-decay.")
    references = _text_field("References", "One per line: DOIs, arXiv ids or URLs.", textarea=True, rows=3)
    builds_on = forms.Field(required=False, label="Builds on", widget=forms.MultipleHiddenInput)
    visibility = _select(
        "Visibility", Finding.Visibility.choices,
        "Restricted: only its authors and the users named below see it (until the embargo ends).",
    )
    restricted_to = _text_field("Shared with", "Usernames, comma-separated (restricted findings only).")
    embargo_until = forms.CharField(
        label="Embargo until", required=False,
        help_text="A restricted finding becomes public at this time, in UTC; empty: no embargo.",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    xrisk_expected_safety_effects = _text_field("Expected safety effects", textarea=True)
    xrisk_expected_capability_effects = _text_field("Expected capability effects", textarea=True)
    xrisk_hazards = _text_field("Hazards", textarea=True)
    xrisk_dual_use = _select("Dual use", DUAL_USE_CHOICES, "Could the finding be used to cause harm as well?")
    xrisk_notes = _text_field("Notes", textarea=True)

    XRISK_FIELDS = ("expected_safety_effects", "expected_capability_effects", "hazards", "dual_use", "notes")

    @classmethod
    def initial_for(cls, finding: Finding) -> dict[str, object]:
        """The form's values for an existing finding."""
        sheet = finding.xrisk_sheet if isinstance(finding.xrisk_sheet, dict) else {}
        embargo = finding.embargo_until
        if embargo is not None:
            embargo = embargo.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")  # the field says UTC
        initial: dict[str, object] = {
            "title": finding.title,
            "kind": finding.kind,
            "summary": finding.summary,
            "tags": ", ".join(t.name for t in finding.tags.all()),
            "references": "\n".join(str(r) for r in finding.references or []),
            "builds_on": [f.pk for f in finding.builds_on.all()],
            "visibility": finding.visibility,
            "restricted_to": ", ".join(u.get_username() for u in finding.restricted_to.all()),
            "embargo_until": embargo or "",
        }
        for name in cls.XRISK_FIELDS:
            value = sheet.get(name)
            if name == "dual_use":
                value = "" if value is None else ("yes" if value else "no")
            initial[XRISK_PREFIX + name] = value or ""
        return initial

    def builds_on_ids(self) -> list[int | str]:
        if self.is_bound and hasattr(self.data, "getlist"):
            values = self.data.getlist("builds_on")
        else:
            values = self.initial.get("builds_on") or []
        ids: list[int | str] = []
        for value in values or []:
            text = str(value).strip()
            if text:
                ids.append(int(text) if text.isascii() and text.isdigit() else text)
        return list(dict.fromkeys(ids))

    def api_data(self) -> dict[str, object]:
        """What the API would be sent (``FindingSerializer``'s fields). Call after ``is_valid``."""
        data = self.cleaned_data
        sheet: dict[str, object] = {}
        for name in self.XRISK_FIELDS:
            value = data.get(XRISK_PREFIX + name) or ""
            if name == "dual_use":
                if value in ("yes", "no"):
                    sheet[name] = value == "yes"
                elif value:
                    sheet[name] = value  # not a choice: the serializer refuses it beside the field
            elif value.strip():
                sheet[name] = value
        return {
            "title": data.get("title", ""),
            "kind": data.get("kind", ""),
            "summary": data.get("summary", ""),
            "tags": _split(data.get("tags", "")),
            "references": _split(data.get("references", ""), "\n\r"),
            "builds_on": self.builds_on_ids(),
            "visibility": data.get("visibility") or Finding.Visibility.PUBLIC,
            "restricted_to": _split(data.get("restricted_to", ""), ", "),
            "embargo_until": _as_utc(data.get("embargo_until") or None),
            "xrisk_sheet": sheet or None,
        }


class ClaimForm(forms.Form):
    """A claim on one metric of a plugin (``ClaimSerializer`` and ``claim_create`` decide)."""

    plugin = _select("Plugin", [], "The experiment plugin whose metric the claim is about.")
    metric = _select("Metric", [])
    direction = _select(
        "Direction", Claim.Direction.choices,
        "Increase or decrease by at least the threshold, or non-inferior: not worse by more than the margin.",
    )
    threshold_unit = _select(
        "Threshold unit", Claim.ThresholdUnit.choices,
        "Relative: a fraction of the baseline (0.3 = 30%). Absolute: the metric's units (points as fractions "
        "for proportions).",
    )
    min_relative_effect = _number("Minimum effect", Claim._meta.get_field("min_relative_effect").help_text, step="any")
    margin = _number("Margin", Claim._meta.get_field("margin").help_text, step="any")
    statement = _text_field(
        "Statement", "The claim in words, as readers will see it.",
        maxlength=Claim._meta.get_field("statement").max_length,
    )

    def __init__(self, *args, plugins: list[str], metrics: list[dict], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["plugin"].widget.choices = [(name, name) for name in plugins]
        self.fields["plugin"].widget.attrs.update({  # htmx: the chosen plugin's metrics
            "hx-get": reverse("dashboard:plugin-metrics"), "hx-target": "#claim-metric", "hx-swap": "outerHTML",
        })
        self.fields["metric"].widget.choices = [
            (m["name"], f"{m['name']} ({m['axis']}, {'higher' if m['higher_is_better'] else 'lower'} is better"
             f"{', ' + m['scale'] if m.get('scale') else ''})")
            for m in metrics
        ]

    def api_data(self) -> dict[str, object]:
        data = self.cleaned_data
        out: dict[str, object] = {
            "metric": data.get("metric", ""),
            "direction": data.get("direction", ""),
            "threshold_unit": data.get("threshold_unit") or Claim.ThresholdUnit.RELATIVE,
            "statement": data.get("statement", ""),
        }
        for name in ("min_relative_effect", "margin"):
            if data.get(name):
                out[name] = data[name]
        return out


DEVICE_CHOICES = [("", "the plugin's default"), *Experiment.Device.choices]


class ExperimentForm(forms.Form):
    """An experiment: a plugin, its parameters (fields generated from its JSON Schema) and run
    settings. ``ExperimentSerializer`` and ``experiment_create`` decide, the plugin's pydantic model
    the parameters."""

    plugin = _select("Plugin", [], "Choosing another plugin loads its parameters.")
    preset = _select("Preset", [], "A named parameter set of the plugin: choosing one fills the fields below.")
    default_seeds = _number(
        "Seeds per reproduction", "Runs (one per seed) of each reproduction when none are given.",
        min=1, max=settings.MAX_SEEDS_PER_REPRODUCTION, step=1,
    )
    device = _select("Device", DEVICE_CHOICES)
    time_limit_s = _number(
        "Time limit (s)", "Per run; empty: the plugin's default.", min=10, max=settings.RUN_MAX_TIME_LIMIT_S, step=1
    )
    memory_limit_mb = _number(
        "Memory limit (MB)", "Per run; empty: the worker's default.", min=1, max=settings.RUN_MAX_MEMORY_LIMIT_MB,
        step=1,
    )
    reproduce = forms.BooleanField(
        label="Queue the first reproduction now", required=False,
        help_text="Within your run quota, with the seeds per reproduction above.",
    )

    BASE_FIELDS = ("plugin", "preset", "default_seeds", "device", "time_limit_s", "memory_limit_mb", "reproduce")

    def __init__(
        self, *args, plugins: list[str], specs: list[ParamSpec], presets: list[str],
        start: dict | None = None, **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.specs = specs
        self.fields["plugin"].widget.choices = [(name, name) for name in plugins]
        self.fields["preset"].widget.choices = [("", "none (defaults)"), *((p, p) for p in presets)]
        # htmx: choosing a plugin loads its parameter fields; choosing a preset fills them
        # hx-sync: a newer choice aborts an answer still in flight, which would otherwise land last
        # and undo it (a preset chosen right after the plugin came back as the plugin's defaults)
        swap = {"hx-get": reverse("dashboard:plugin-params"), "hx-target": "#plugin-params", "hx-swap": "outerHTML",
                "hx-sync": "#experiment-form:replace"}
        self.fields["plugin"].widget.attrs.update(swap)
        self.fields["preset"].widget.attrs.update({**swap, "hx-include": "#experiment-form [name='plugin']"})
        for spec in specs:
            self.fields[spec.field_name] = param_field(spec)
        self.initial = {"default_seeds": 3, "reproduce": True, **self.initial, **param_initial(specs, start)}

    def base_fields_bound(self) -> list[forms.BoundField]:
        return [self[name] for name in self.BASE_FIELDS if name not in ("plugin", "preset")]

    def param_fields_bound(self) -> list[forms.BoundField]:
        return [self[spec.field_name] for spec in self.specs]

    def api_data(self, params: dict) -> dict[str, object]:
        data = self.cleaned_data
        out: dict[str, object] = {"plugin": data.get("plugin", ""), "params": params,
                                  "reproduce": bool(data.get("reproduce"))}
        for name in ("default_seeds", "device", "time_limit_s", "memory_limit_mb"):
            if data.get(name):
                out[name] = data[name]
        return out


class RetractForm(forms.Form):
    reason = forms.CharField(
        label="Why is it retracted?", required=False, strip=False,
        help_text="Shown with the experiment. Its runs are kept for the record; queued and running runs are "
        "cancelled, and it no longer counts in the finding's effects.",
        widget=forms.Textarea(attrs={"rows": 4}),
    )
