from collections import defaultdict

import django_filters
from django import forms
from django.db.models import Exists, OuterRef

from plugins.registry import all_plugins
from registry.findings.models import Claim, Finding, FindingAuthor
from registry.findings.selectors import (
    finding_filter_plugin,
    finding_filter_tag,
    finding_list,
    finding_search_filter,
)
from registry.reproductions.models import Experiment, MetricDefinition, Reproduction, Run


class IntegerFilter(django_filters.NumberFilter):
    """A whole number (the ids and seeds filtered on): "0.5" is a 400 naming the parameter."""

    field_class = forms.IntegerField


def _metric_axes() -> dict[str, dict[str, str]]:
    """plugin -> {metric: axis}: the catalogue (latest version wins), overridden by what the
    installed plugins declare now (the catalogue only learns a plugin once an experiment uses it)."""
    axes: dict[str, dict[str, str]] = defaultdict(dict)
    for plugin, metric, axis in MetricDefinition.objects.order_by("version").values_list("plugin", "name", "axis"):
        axes[plugin][metric] = axis
    for name, entry in all_plugins().items():
        if entry.available:
            axes[name].update({m.name: m.axis.value for m in entry.experiment.metrics})
    return axes


def findings_with_claims_on_axis(axis: str) -> set[int]:
    """Ids of findings with a current claim on a metric of this axis, as declared by the plugins
    of the finding's experiments (or, for a finding with none yet, by any plugin)."""
    axes = _metric_axes()
    plugins_of: dict[int, set[str]] = defaultdict(set)
    for finding_id, plugin in Experiment.objects.values_list("finding_id", "plugin"):
        plugins_of[finding_id].add(plugin)
    matching: set[int] = set()
    for finding_id, metric in Claim.objects.filter(is_current=True).values_list("finding_id", "metric"):
        plugins = plugins_of.get(finding_id) or axes.keys()
        if any(axes.get(plugin, {}).get(metric) == axis for plugin in plugins):
            matching.add(finding_id)
    return matching


class FindingFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=Finding.Kind.choices)
    status = django_filters.ChoiceFilter(choices=Finding.Status.choices)
    visibility = django_filters.ChoiceFilter(choices=Finding.Visibility.choices)
    # Many-valued relations are matched with EXISTS (no join, so no DISTINCT over the table).
    tag = django_filters.CharFilter(method="by_tag", label="Tag name")
    plugin = django_filters.CharFilter(method="by_plugin", label="Plugin of one of its experiments")
    author = django_filters.CharFilter(method="by_author", label="Author username (accepted authors only)")
    q = django_filters.CharFilter(
        method="search",
        label="Words in title or summary: each word starts a word there, any case (full-text search on PostgreSQL)",
    )
    axis = django_filters.ChoiceFilter(
        choices=MetricDefinition.Axis.choices, method="by_axis", label="Has a claim on a metric of this axis"
    )
    builds_on = IntegerFilter(method="by_parent", label="Builds directly on this finding")

    class Meta:
        model = Finding
        fields = ["kind", "status", "visibility", "tag", "plugin", "author", "q", "axis", "builds_on"]

    def by_tag(self, queryset, name, value):
        return finding_filter_tag(queryset, value)

    def by_plugin(self, queryset, name, value):
        return finding_filter_plugin(queryset, value)

    def by_author(self, queryset, name, value):
        # the username and the status are those of the same authorship row
        authorships = FindingAuthor.objects.filter(
            finding_id=OuterRef("pk"), user__username=value, status=FindingAuthor.Status.ACCEPTED
        )
        return queryset.filter(Exists(authorships))

    def search(self, queryset, name, value):
        return finding_search_filter(queryset, value)

    def by_axis(self, queryset, name, value):
        return queryset.filter(pk__in=findings_with_claims_on_axis(value))

    def by_parent(self, queryset, name, value):
        # A parent the reader may not see answers like an absent one: nothing builds on it.
        user = getattr(self.request, "user", None)
        if not finding_list(user=user).filter(pk=value).exists():
            return queryset.none()
        edges = Finding.builds_on.through.objects.filter(from_finding_id=OuterRef("pk"), to_finding_id=value)
        return queryset.filter(Exists(edges))


# Related ids are plain numbers, not model choices: a choice filter answers 400 for an id that does
# not exist and an empty list for one the reader may not see, which would reveal hidden rows.
class ExperimentFilter(django_filters.FilterSet):
    plugin = django_filters.CharFilter()
    finding = IntegerFilter(field_name="finding_id")

    class Meta:
        model = Experiment
        fields = ["plugin", "finding"]


class ReproductionFilter(django_filters.FilterSet):
    experiment = IntegerFilter(field_name="experiment_id")
    device = django_filters.ChoiceFilter(choices=Experiment.Device.choices)
    source = django_filters.ChoiceFilter(choices=Reproduction.Source.choices)

    class Meta:
        model = Reproduction
        fields = ["experiment", "device", "source"]


class RunFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=Run.State.choices)
    reproduction = IntegerFilter(field_name="reproduction_id")
    seed = IntegerFilter()
    queue = django_filters.CharFilter()

    class Meta:
        model = Run
        fields = ["state", "reproduction", "seed", "queue"]
