"""Serializers parse input and render output; the writes themselves are in the services."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models
from django.http import QueryDict
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField
from rest_framework.relations import PKOnlyObject

from registry.findings.markdown import render_markdown
from registry.findings.models import Claim, Finding
from registry.reproductions.models import Artifact, Experiment, Measurement, Reproduction, Run

User = get_user_model()

SUMMARY_MAX_CHARS = 100_000
MAX_BUILDS_ON = 100

XRISK_FIELDS = (
    "expected_safety_effects",
    "expected_capability_effects",
    "hazards",
    "dual_use",
    "notes",
)


class StrictCharField(serializers.CharField):
    """Text only: a number or a boolean is a 400, not silently turned into its string (DRF's
    CharField would store 5 as "5")."""

    default_error_messages = {"not_text": "a string is required"}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_text")
        return super().to_internal_value(data)


class StrictSlugField(serializers.SlugField):
    """A slug, text only (DRF's would read 0 as "0")."""

    default_error_messages = {"not_text": "a string is required"}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_text")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """true or false only: "yes", "1" or 1 is a 400 (DRF's BooleanField would read them as true)."""

    default_error_messages = {"not_boolean": "true or false is required"}

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        if isinstance(getattr(self.root, "initial_data", None), QueryDict):  # a form: text is all it has
            return super().to_internal_value(data)
        self.fail("not_boolean")


class StrictTextMixin:
    """For a ModelSerializer: its model's text and boolean fields as ``StrictCharField`` and
    ``StrictBooleanField`` (JSON's types, as the schema documents them)."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
        models.BooleanField: StrictBooleanField,
    }


class NameListField(serializers.ListField):
    """A list of names in and out, for a many-to-many relation (tags by name, users by username)."""

    def __init__(self, *, attribute: str, **kwargs: Any):
        self.attribute = attribute
        super().__init__(**kwargs)

    def to_representation(self, data: Any) -> list[str]:
        items = data.all() if hasattr(data, "all") else data
        return sorted(getattr(item, self.attribute, item) for item in items)


class AuthorsField(NameListField):
    """``authors``: in, the usernames to name as authors (new names are invited, not added); out,
    the accepted authors only."""

    def __init__(self, **kwargs: Any):
        super().__init__(attribute="username", **kwargs)

    def get_attribute(self, instance: Any) -> Any:
        from registry.findings.selectors import finding_authors_split

        return finding_authors_split(instance)[0]


class ThresholdField(serializers.FloatField):
    """A claim threshold: a finite number, not a boolean (JSON true is not 1.0); -0.0 reads as 0.0."""

    default_error_messages = {"boolean": "a number is required, not a boolean"}

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool):
            self.fail("boolean")
        value = super().to_internal_value(data)
        return 0.0 if value == 0 else value


class ClaimSerializer(StrictTextMixin, serializers.ModelSerializer):
    verdict = serializers.SerializerMethodField()
    supersedes = serializers.PrimaryKeyRelatedField(queryset=Claim.objects.all(), required=False, allow_null=True)
    min_relative_effect = ThresholdField(
        required=False, allow_null=True, help_text=Claim._meta.get_field("min_relative_effect").help_text
    )
    margin = ThresholdField(required=False, allow_null=True, help_text=Claim._meta.get_field("margin").help_text)

    class Meta:
        model = Claim
        fields = [
            "id", "finding", "metric", "direction", "min_relative_effect", "margin", "threshold_unit", "statement",
            "version", "supersedes", "is_current", "verdict", "created_at",
        ]
        read_only_fields = ["id", "finding", "version", "is_current", "verdict", "created_at"]

    def get_fields(self) -> dict:
        fields = super().get_fields()
        finding = self.context.get("finding")
        if finding is not None:
            # Only this finding's claims can be superseded: another finding's claim (hidden or not)
            # answers exactly like an id that does not exist.
            fields["supersedes"].queryset = Claim.objects.filter(finding=finding)
        return fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_verdict(self, claim: Claim) -> str | None:
        verdict = getattr(claim, "verdict", None)
        return verdict.verdict if verdict else None


CLAIM_IMMUTABLE_MESSAGES = {
    "metric": "a claim's metric cannot be changed; post a new claim or supersede this one",
    "supersedes": "what a claim supersedes is fixed; post a new claim with 'supersedes' to version one",
    "finding": "a claim's finding cannot be changed; post a new claim on the other finding",
}


class ClaimUpdateSerializer(serializers.Serializer):
    """PATCH of a claim: only these fields; any other (the metric, read-only or unknown fields) is a
    400 naming it, never silently ignored."""

    direction = serializers.ChoiceField(choices=Claim.Direction.choices, required=False)
    min_relative_effect = ThresholdField(required=False, allow_null=True)
    margin = ThresholdField(required=False, allow_null=True)
    threshold_unit = serializers.ChoiceField(choices=Claim.ThresholdUnit.choices, required=False)
    statement = StrictCharField(required=False, allow_blank=True, max_length=500)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = sorted(self.fields)
            read_only = set(ClaimSerializer.Meta.fields) - set(allowed)
            errors = {}
            for name in sorted(set(data) - set(allowed), key=str):
                if name in CLAIM_IMMUTABLE_MESSAGES:
                    errors[name] = [CLAIM_IMMUTABLE_MESSAGES[name]]
                elif name in read_only:
                    errors[name] = [f"{name} is read-only; a claim's editable fields are {', '.join(allowed)}"]
                else:
                    errors[name] = [f"unknown field; a claim's editable fields are {', '.join(allowed)}"]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class XRiskSheetSerializer(serializers.Serializer):
    """The authors' own statement of expected externalities (after Hendrycks & Mazeika 2022)."""

    expected_safety_effects = StrictCharField(required=False, allow_blank=True, max_length=5000)
    expected_capability_effects = StrictCharField(required=False, allow_blank=True, max_length=5000)
    hazards = StrictCharField(required=False, allow_blank=True, max_length=5000)
    dual_use = StrictBooleanField(required=False)
    notes = StrictCharField(required=False, allow_blank=True, max_length=5000)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = set(data) - set(XRISK_FIELDS)
            if unknown:
                raise serializers.ValidationError(f"unknown fields {sorted(unknown)}; allowed: {list(XRISK_FIELDS)}")
        return super().to_internal_value(data)


class VisibleFindingField(serializers.PrimaryKeyRelatedField):
    """A finding by id, among those the requesting user may see (no linking to, or probing for,
    restricted findings one cannot read)."""

    def get_queryset(self):
        from registry.findings.selectors import finding_list

        request = self.context.get("request")
        return finding_list(user=getattr(request, "user", None))


class ExperimentBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Experiment
        fields = ["id", "plugin", "label", "params", "default_seeds", "device", "retracted_at"]


def _related(finding: Finding, relation: str) -> list:
    """A finding's related rows: the list ``finding_list(linked_visible="lists")`` prefetched, else
    a query."""
    from registry.findings.selectors import API_LISTS

    rows = getattr(finding, API_LISTS[relation], None)
    return rows if rows is not None else list(getattr(finding, relation).all())


class FindingSerializer(StrictTextMixin, serializers.ModelSerializer):
    tags = NameListField(attribute="name", child=StrictSlugField(max_length=64), required=False, max_length=30)
    references = serializers.ListField(
        child=StrictCharField(max_length=500), required=False, max_length=50
    )
    authors = AuthorsField(
        child=StrictCharField(),
        required=False,
        max_length=100,
        help_text="Accepted authors. On write, the names to be authors: a name not yet an author is invited "
        "(listed in invited_authors until that user accepts); a name left out is removed.",
    )
    invited_authors = serializers.SerializerMethodField(
        help_text="Pending invitations to author this finding: shown to its authors and staff, and to an "
        "invited user (their own); empty for everyone else."
    )
    restricted_to = NameListField(
        attribute="username", child=StrictCharField(), required=False, max_length=1000
    )
    summary = StrictCharField(required=False, allow_blank=True, max_length=SUMMARY_MAX_CHARS)
    builds_on = VisibleFindingField(many=True, required=False)
    built_upon_by = serializers.SerializerMethodField()
    summary_html = serializers.SerializerMethodField()
    claims = serializers.SerializerMethodField()
    experiments = ExperimentBriefSerializer(many=True, read_only=True)
    xrisk_sheet = XRiskSheetSerializer(required=False, allow_null=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Finding
        fields = [
            "id", "url", "title", "summary", "summary_html", "kind", "tags", "references", "authors", "invited_authors",
            "status", "builds_on", "built_upon_by", "visibility", "restricted_to",
            "embargo_until", "xrisk_sheet", "effects_stale", "claims", "experiments", "created_at", "updated_at",
        ]
        read_only_fields = ["id", "status", "effects_stale", "created_at", "updated_at"]

    def to_internal_value(self, data: Any) -> Any:
        # Checked before the items are (one query each): a huge list is refused outright.
        builds_on = data.get("builds_on") if isinstance(data, dict) else None
        if builds_on is not None and not isinstance(builds_on, list) and not isinstance(data, QueryDict):
            # (DRF's many-related field would read an object as an empty list)
            raise serializers.ValidationError({"builds_on": ["a list of finding ids is required"]})
        if isinstance(builds_on, list) and len(builds_on) > MAX_BUILDS_ON:
            raise serializers.ValidationError({"builds_on": [f"at most {MAX_BUILDS_ON} findings"]})
        return super().to_internal_value(data)

    def to_representation(self, finding: Finding) -> dict:
        """What ``ModelSerializer.to_representation`` gives, linked findings the reader may not see
        left out; the fields a page of findings spends its time in are rendered here directly (as
        their DRF field would: tests/api/test_findings_list_render.py compares the two) from the
        lists that ``finding_list(linked_visible="lists")`` prefetched (a query each without)."""
        from registry.findings.selectors import finding_authors_split
        from registry.findings.services import finding_is_visible

        request = self.context.get("request")
        user = getattr(request, "user", None)
        builds_on = _related(finding, "builds_on")
        built_upon_by = _related(finding, "built_upon_by")
        # (linked findings prefetched through finding_list carry visible_to_reader: no query each)
        hidden = {
            f.pk for f in (*builds_on, *built_upon_by)
            if not getattr(f, "visible_to_reader", False) and not finding_is_visible(finding=f, user=user)
        }
        fields = self.fields

        def rendered(name: str, value: Any) -> Any:  # a field's own rendering; None stays None, as in DRF
            return None if value is None else fields[name].to_representation(value)

        def text(value: Any) -> str | None:  # a CharField's rendering
            return None if value is None else str(value)

        references = finding.references
        fast = {
            "id": finding.pk,
            "url": self._url_template.format(finding.pk),
            "title": text(finding.title),
            "summary": text(finding.summary),
            "summary_html": self.get_summary_html(finding),
            "kind": text(finding.kind),
            "tags": sorted(tag.name for tag in _related(finding, "tags")),
            "references": None if references is None else [text(r) for r in references],
            "authors": sorted(u.username for u in finding_authors_split(finding)[0]),
            "invited_authors": self.get_invited_authors(finding),
            "status": text(finding.status),
            "builds_on": [f.pk for f in builds_on if f.pk not in hidden],
            "built_upon_by": sorted(f.pk for f in built_upon_by if f.pk not in hidden),
            "visibility": text(finding.visibility),
            "restricted_to": sorted(u.username for u in _related(finding, "restricted_to")),
            "embargo_until": rendered("embargo_until", finding.embargo_until),
            "xrisk_sheet": rendered("xrisk_sheet", finding.xrisk_sheet),
            "effects_stale": rendered("effects_stale", finding.effects_stale),
            "claims": self.get_claims(finding),
            "experiments": fields["experiments"].to_representation(_related(finding, "experiments")),
            "created_at": rendered("created_at", finding.created_at),
            "updated_at": rendered("updated_at", finding.updated_at),
        }
        data = {}
        for field in self._readable_fields:
            name = field.field_name
            if name in fast:
                data[name] = fast[name]
                continue
            try:  # a field not rendered above: as ModelSerializer.to_representation does
                attribute = field.get_attribute(finding)
            except SkipField:
                continue
            none = attribute.pk if isinstance(attribute, PKOnlyObject) else attribute
            data[name] = None if none is None else field.to_representation(attribute)
        return data

    @cached_property
    def _url_template(self) -> str:
        """The detail URL with ``{}`` for the id (one ``reverse`` per serializer, not per finding)."""
        marker = "__finding_pk__"
        return reverse("api:finding-detail", args=[marker]).replace("{", "{{").replace("}", "}}").replace(
            marker, "{}"
        )

    @cached_property
    def _claim_serializer(self) -> ClaimSerializer:
        return ClaimSerializer()

    def get_url(self, finding: Finding) -> str:
        return reverse("api:finding-detail", args=[finding.pk])

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_invited_authors(self, finding: Finding) -> list[str]:
        from registry.findings.selectors import finding_authors_split

        request = self.context.get("request")
        user = getattr(request, "user", None)
        if not getattr(user, "is_authenticated", False):
            return []
        accepted, invited = finding_authors_split(finding)
        if user.is_staff or any(u.pk == user.pk for u in accepted):
            return sorted(u.get_username() for u in invited)
        return [u.get_username() for u in invited if u.pk == user.pk]

    def get_built_upon_by(self, finding: Finding) -> list[int]:
        return sorted(f.pk for f in _related(finding, "built_upon_by"))

    def get_summary_html(self, finding: Finding) -> str:
        return render_markdown(finding.summary)

    @extend_schema_field(ClaimSerializer(many=True))
    def get_claims(self, finding: Finding) -> list[dict]:
        claims = sorted((c for c in _related(finding, "claims") if c.is_current), key=lambda c: c.pk)
        return [self._claim_serializer.to_representation(claim) for claim in claims]

    def _users(self, names: list[str], field: str) -> list:
        users = list(User.objects.filter(username__in=names))
        missing = set(names) - {u.username for u in users}
        if missing:
            raise serializers.ValidationError({field: [f"unknown users: {sorted(missing)}"]})
        return users

    def validate(self, attrs: dict) -> dict:
        if "authors" in attrs:
            attrs["authors"] = self._users(attrs["authors"], "authors")
        if "restricted_to" in attrs:
            attrs["restricted_to"] = self._users(attrs["restricted_to"], "restricted_to")
        visibility = attrs.get("visibility", getattr(self.instance, "visibility", Finding.Visibility.PUBLIC))
        if visibility == Finding.Visibility.PUBLIC and attrs.get("restricted_to"):
            raise serializers.ValidationError({"restricted_to": ["only a restricted finding has restricted_to"]})
        return attrs


class ExperimentSerializer(StrictTextMixin, serializers.ModelSerializer):
    reproduce = StrictBooleanField(
        default=True, write_only=True, help_text="Queue the first reproduction now (default seeds)."
    )
    params = serializers.JSONField(required=False, default=dict)
    preset = StrictCharField(
        required=False, write_only=True, max_length=100,
        help_text="A preset of the plugin (see GET /plugins/): its parameters, overridden by `params`.",
    )
    device = serializers.ChoiceField(choices=Experiment.Device.choices, required=False)
    label = StrictCharField(
        required=False, allow_blank=True, max_length=200,
        help_text="What sets this experiment apart from the finding's others (e.g. `plain MSE loss`).",
    )
    # upper bounds: RUN_MAX_TIME_LIMIT_S / RUN_MAX_MEMORY_LIMIT_MB, checked by experiment_create
    time_limit_s = serializers.IntegerField(
        required=False, min_value=10, max_value=settings.RUN_MAX_TIME_LIMIT_S,
        help_text="Seconds per run; at most the registry's RUN_MAX_TIME_LIMIT_S.",
    )
    memory_limit_mb = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=settings.RUN_MAX_MEMORY_LIMIT_MB,
        help_text="Memory per run (MB); null: the worker's default. At most RUN_MAX_MEMORY_LIMIT_MB.",
    )
    default_seeds = serializers.IntegerField(
        required=False, min_value=1, max_value=settings.MAX_SEEDS_PER_REPRODUCTION,
        help_text="Seeds per reproduction when none are given; at most MAX_SEEDS_PER_REPRODUCTION. By default "
        "the plugin's `recommended_seeds`, else 3.",
    )
    reproductions = serializers.SerializerMethodField()

    class Meta:
        model = Experiment
        fields = [
            "id", "finding", "plugin", "label", "plugin_version_constraint", "params", "preset", "default_seeds",
            "device",
            "time_limit_s", "memory_limit_mb", "reproduce", "reproductions", "retracted_at", "retraction_reason",
            "created_at",
        ]
        read_only_fields = [
            "id", "finding", "created_at", "reproductions", "retracted_at", "retraction_reason",
        ]

    def to_internal_value(self, data: Any) -> Any:
        # A key the experiment does not have is a 400 naming it, never silently ignored (a
        # misspelt "prest" or "n_seeds" would otherwise queue runs the caller did not ask for).
        if isinstance(data, dict):  # a JSON object or a form (a QueryDict is a dict)
            ignored = {"csrfmiddlewaretoken"} if isinstance(data, QueryDict) else set()
            unknown = sorted(str(k) for k in set(data) - set(self.fields) - ignored)
            if unknown:
                accepted = ", ".join(name for name, f in self.fields.items() if not f.read_only)
                raise serializers.ValidationError(
                    {name: [f"unknown field; an experiment's fields are {accepted}"] for name in unknown}
                )
        return super().to_internal_value(data)

    def get_reproductions(self, experiment: Experiment) -> list[int]:
        return [r.pk for r in experiment.reproductions.all()]


class ExperimentRetractSerializer(serializers.Serializer):
    reason = StrictCharField(max_length=2000, help_text="Why the experiment is retracted (shown with it).")


class ReproductionRequestSerializer(serializers.Serializer):
    seeds = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=2**31 - 1), required=False, min_length=1,
        max_length=settings.MAX_SEEDS_PER_REPRODUCTION,
        help_text="Distinct seeds, one run each; at most MAX_SEEDS_PER_REPRODUCTION (50 by default).",
    )
    n_seeds = serializers.IntegerField(
        required=False, min_value=1, max_value=settings.MAX_SEEDS_PER_REPRODUCTION,
        help_text="Seeds 0..n_seeds-1; at most MAX_SEEDS_PER_REPRODUCTION.",
    )
    device = serializers.ChoiceField(choices=Experiment.Device.choices, required=False)

    def validate(self, attrs: dict) -> dict:
        if "seeds" in attrs and "n_seeds" in attrs:
            raise serializers.ValidationError({"seeds": ["give seeds or n_seeds, not both"]})
        return attrs


class HidesHostsFromAnonymous:
    """Worker host names are infrastructure details: shown to signed-in users only."""

    def to_representation(self, run: Run) -> dict:
        data = super().to_representation(run)
        request = self.context.get("request")
        if not (request and request.user.is_authenticated):
            data.pop("worker_host", None)
            if isinstance(data.get("environment"), dict):
                data["environment"] = {k: v for k, v in data["environment"].items() if k != "hostname"}
        return data


class RunBriefSerializer(HidesHostsFromAnonymous, serializers.ModelSerializer):
    class Meta:
        model = Run
        fields = [
            "id", "seed", "state", "progress", "progress_message", "attempts", "queue", "hardware",
            "worker_host", "started_at", "finished_at", "error",
        ]


class ReproductionSerializer(serializers.ModelSerializer):
    requested_by = serializers.CharField(source="requested_by.username")
    finding = serializers.IntegerField(source="experiment.finding_id")
    plugin = serializers.CharField(source="experiment.plugin")
    runs = RunBriefSerializer(many=True)
    state = serializers.SerializerMethodField(help_text="queued / running / finished (every run ended)")
    outcome = serializers.SerializerMethodField(
        help_text="null while a run is active; then cancelled (all runs were), failed (none succeeded) or succeeded"
    )
    waiting_for_gpu_worker = serializers.SerializerMethodField()

    class Meta:
        model = Reproduction
        fields = [
            "id", "experiment", "finding", "plugin", "requested_by", "seeds", "device", "source", "state",
            "outcome", "waiting_for_gpu_worker", "runs", "created_at",
        ]

    def get_state(self, reproduction: Reproduction) -> str:
        from registry.reproductions.selectors import reproduction_state

        return reproduction_state(reproduction)

    @extend_schema_field(serializers.ChoiceField(choices=["succeeded", "failed", "cancelled"], allow_null=True))
    def get_outcome(self, reproduction: Reproduction) -> str | None:
        from registry.reproductions.selectors import reproduction_outcome

        return reproduction_outcome(reproduction)

    def get_waiting_for_gpu_worker(self, reproduction: Reproduction) -> bool:
        from registry.reproductions.selectors import gpu_availability, reproduction_waiting_for_gpu

        # from the prefetched runs, and one look for a GPU worker per response (not per reproduction)
        if "gpu_available" not in self.context:
            self.context["gpu_available"] = gpu_availability()
        return reproduction_waiting_for_gpu(reproduction, gpu_available=self.context["gpu_available"])


class MeasurementSerializer(serializers.ModelSerializer):
    class Meta:
        model = Measurement
        fields = ["arm", "metric", "metric_version", "value", "censored"]


class ArtifactSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()
    partial = serializers.BooleanField(
        read_only=True, help_text="Left by a run that did not succeed (failed, timed out, cancelled): see run_state."
    )

    class Meta:
        model = Artifact
        fields = ["id", "name", "content_type", "size", "sha256", "download_url", "created_at", "run_state",
                  "partial"]

    def get_download_url(self, artifact: Artifact) -> str:
        return reverse("api:artifact-download", args=[artifact.pk])


class RunSerializer(HidesHostsFromAnonymous, serializers.ModelSerializer):
    finding = serializers.IntegerField(source="reproduction.experiment.finding_id")
    experiment = serializers.IntegerField(source="reproduction.experiment_id")
    plugin = serializers.CharField(source="reproduction.experiment.plugin")
    self_reported = serializers.BooleanField()
    measurements = MeasurementSerializer(many=True)
    artifacts = ArtifactSerializer(many=True)

    class Meta:
        model = Run
        fields = [
            "id", "reproduction", "experiment", "finding", "plugin", "seed", "state", "queue", "attempts",
            "progress", "progress_message", "heartbeat_at", "started_at", "finished_at", "worker_host",
            "plugin_version", "requested_plugin_version", "hardware", "environment", "self_reported",
            "measurements", "artifacts",
            "logs", "error", "traceback", "created_at",
        ]
