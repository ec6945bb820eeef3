import django_filters
from django.db.models import Q

from registry.findings.models import Finding
from registry.reproductions.models import MetricDefinition


class FindingFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=Finding.Kind.choices)
    status = django_filters.ChoiceFilter(choices=Finding.Status.choices)
    visibility = django_filters.ChoiceFilter(choices=Finding.Visibility.choices)
    tag = django_filters.CharFilter(field_name="tags__name", lookup_expr="iexact", label="Tag name")
    plugin = django_filters.CharFilter(field_name="experiments__plugin", label="Plugin of one of its experiments")
    author = django_filters.CharFilter(field_name="authors__username", label="Author username")
    q = django_filters.CharFilter(method="search", label="Text in title or summary")
    axis = django_filters.ChoiceFilter(
        choices=MetricDefinition.Axis.choices, method="by_axis", label="Has a claim on a metric of this axis"
    )
    builds_on = django_filters.NumberFilter(field_name="builds_on__id")

    class Meta:
        model = Finding
        fields = ["kind", "status", "visibility", "tag", "plugin", "author", "q", "axis", "builds_on"]

    def search(self, queryset, name, value):
        return queryset.filter(Q(title__icontains=value) | Q(summary__icontains=value))

    def by_axis(self, queryset, name, value):
        metrics = MetricDefinition.objects.filter(axis=value).values_list("name", flat=True)
        return queryset.filter(claims__metric__in=metrics, claims__is_current=True)
