"""Curves API: a run's training curves, and a finding's across its runs, thinned for plots.

Thin views: visibility is the run's / the finding's (``finding_list``: a private or embargoed
finding is a 404 to whoever may not read it), then one selector of
``registry.reproductions.series``. Constant query count whatever the number of runs.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import permissions, serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from registry.api.errors import query_text
from registry.api.schema import error
from registry.errors import NotFound
from registry.findings.selectors import finding_list
from registry.reproductions.models import Run
from registry.reproductions.series import (
    DEFAULT_MAX_POINTS,
    FINDING_MAX_CURVES,
    MAX_MAX_POINTS,
    finding_series,
    parse_max_points,
    run_series,
)


@extend_schema_field({
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "arm": {"type": "string"}, "name": {"type": "string"},
            "steps": {"type": "array", "items": {"type": "integer"}},
            "values": {"type": "array", "items": {"type": "number"}},
        },
        "required": ["arm", "name", "steps", "values"],
    },
})
class SeriesInputField(serializers.Field):
    """Curves posted with a self-reported run, passed as parsed (NaN included): the service checks
    them and names what is wrong (``series[0].values``)."""

    def to_internal_value(self, data: object) -> object:
        return data

    def to_representation(self, value: object) -> object:
        return value


class CurveSerializer(serializers.Serializer):
    arm = serializers.CharField()
    name = serializers.CharField()
    steps = serializers.ListField(child=serializers.IntegerField())
    values = serializers.ListField(child=serializers.FloatField())
    logged = serializers.IntegerField(help_text="Points the run logged (more than `points` when it was thinned).")
    points = serializers.IntegerField(help_text="Points stored (at most 10,000).")


class RunSeriesSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    seed = serializers.IntegerField()
    state = serializers.CharField(help_text="The run's state: curves of failed, timed-out or cancelled runs are "
                                  "partial.")
    series = CurveSerializer(many=True)


class FindingCurveSerializer(CurveSerializer):
    run = serializers.IntegerField()
    seed = serializers.IntegerField()
    state = serializers.CharField()
    experiment = serializers.IntegerField()
    plugin = serializers.CharField()
    self_reported = serializers.BooleanField()


class FindingSeriesSerializer(serializers.Serializer):
    finding = serializers.IntegerField()
    max_points = serializers.IntegerField()
    truncated = serializers.BooleanField(help_text=f"More than {FINDING_MAX_CURVES} curves matched: filter by "
                                         f"name or arm.")
    series = FindingCurveSerializer(many=True, help_text="One per (run, arm, name), each thinned to max_points.")


FILTERS = [
    OpenApiParameter("name", str, description="Only the curves of this name (e.g. `test_accuracy`)."),
    OpenApiParameter("arm", str, description="Only the curves of this arm (`baseline`, `intervention`)."),
]


@extend_schema(
    summary="A run's training curves",
    description="The curves the run's plugin logged with `ctx.log_series`, as stored (at most 32 per run, "
    "10,000 points each). A failed, timed-out or cancelled run's curves stop where it stopped.",
    parameters=FILTERS,
    responses={200: RunSeriesSerializer, 400: error("A bad `name` or `arm`."),
               404: error("No such run the caller may see.")},
)
@api_view(["GET"])
@permission_classes([permissions.AllowAny])
def run_series_view(request: Request, pk: int) -> Response:
    name, arm = query_text(request, "name", max_length=100), query_text(request, "arm", max_length=50)
    run = (
        Run.objects.filter(pk=pk, reproduction__experiment__finding__in=finding_list(user=request.user))
        .only("id", "seed", "state").first()
    )
    if run is None:
        raise NotFound(f"no run {pk}")
    return Response({"run": run.pk, "seed": run.seed, "state": run.state,
                     "series": run_series(run, name=name, arm=arm)})


@extend_schema(
    summary="A finding's training curves across its runs",
    description=f"Every curve of every run of the finding's experiments, each thinned to `max_points` by min/max "
    f"bucketing (first and last points kept, peaks and dips too), for plots. At most {FINDING_MAX_CURVES} "
    f"curves (`truncated`).",
    parameters=[*FILTERS, OpenApiParameter(
        "max_points", int, description=f"Points per curve at most: 2 to {MAX_MAX_POINTS} (default "
        f"{DEFAULT_MAX_POINTS}).")],
    responses={200: FindingSeriesSerializer, 400: error("A bad `max_points`, `name` or `arm`: `errors` names it."),
               404: error("No such finding the caller may see.")},
)
@api_view(["GET"])
@permission_classes([permissions.AllowAny])
def finding_series_view(request: Request, pk: int) -> Response:
    name, arm = query_text(request, "name", max_length=100), query_text(request, "arm", max_length=50)
    max_points = parse_max_points(request.query_params.get("max_points"))
    finding = finding_list(user=request.user).filter(pk=pk).only("id").first()
    if finding is None:
        raise NotFound(f"no finding {pk}")
    return Response(finding_series(finding, name=name, arm=arm, max_points=max_points))
