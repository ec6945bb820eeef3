"""Effects API: the landscape, a finding's lineage roll-up, and self-reported results.

Thin views: parse, call one selector or service, render. (The per-finding effects are served by
``FindingViewSet.effects`` in views.py.)
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import permissions, serializers, status
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from registry.api.errors import query_text
from registry.api.parsers import JSONParser as RegistryJSONParser
from registry.api.schema import error
from registry.api.serializers import RunSerializer, StrictCharField
from registry.effects.selectors import landscape_get, rollup_get
from registry.errors import ApplicationError, NotFound
from registry.findings.models import Finding
from registry.findings.selectors import finding_list
from registry.reproductions.selectors import experiment_list
from registry.reproductions.self_reported import ensure_reporting_author, self_reported_run_record

ERROR = error("Invalid input: `errors` names each field.")


@extend_schema(
    summary="Safety vs capability across findings",
    description=(
        "Every visible finding's safety and capability scores (with intervals) and lean flag; the "
        "aggregate counts (safety-leaning, capability-leaning, dual, neither); the correlation of the "
        "two scores across findings; per plugin, the capabilities correlation of each safety metric "
        "(Ren et al. 2024); and each theory's lineage roll-up counts. See docs/statistics.md."
    ),
    parameters=[
        OpenApiParameter("tag", str, description="Only findings with this tag."),
        OpenApiParameter("kind", str, enum=list(Finding.Kind.values), description="Only findings of this kind."),
        OpenApiParameter("plugin", str, description="Only findings with an experiment of this plugin."),
    ],
    responses={200: OpenApiTypes.OBJECT, 400: ERROR},
)
@api_view(["GET"])
@permission_classes([permissions.AllowAny])
def landscape(request: Request) -> Response:
    kind = query_text(request, "kind")
    if kind is not None and kind not in Finding.Kind.values:
        raise ApplicationError(
            f"unknown kind {kind!r}; choose one of {', '.join(Finding.Kind.values)}", field="kind"
        )
    return Response(
        landscape_get(
            user=request.user,
            tag=query_text(request, "tag"),
            kind=kind,
            plugin=query_text(request, "plugin"),
        )
    )


@extend_schema(
    summary="A finding's downstream effects",
    description=(
        "The findings that build on this one, directly or transitively, with their axis scores, "
        "lean flags and depth in the lineage, and counts by lean, status and depth."
    ),
    responses={200: OpenApiTypes.OBJECT, 404: error("No such finding the caller may see.")},
)
@api_view(["GET"])
@permission_classes([permissions.AllowAny])
def finding_rollup(request: Request, pk: int) -> Response:
    finding = finding_list(user=request.user).filter(pk=pk).first()
    if finding is None:
        raise NotFound(f"no finding {pk}")
    return Response(rollup_get(finding, user=request.user))


@extend_schema_field(OpenApiTypes.OBJECT)
class MeasurementsField(serializers.Field):
    """The parsed JSON as is (NaN included): the service checks it and names what is wrong."""

    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class SelfReportedRunSerializer(serializers.Serializer):
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1)
    measurements = MeasurementsField(help_text="{arm: {metric: value}}: every declared arm and metric.")
    params = serializers.JSONField(help_text="The parameters used; must equal the experiment's after validation.")
    hardware = StrictCharField(max_length=200, help_text="'cpu' or the GPU model the run used.")
    environment = serializers.JSONField(required=False, default=dict, help_text="torch/CUDA versions, host, ...")
    plugin_version = StrictCharField(
        max_length=50, required=False, allow_blank=True, help_text="Defaults to the installed plugin's version."
    )


class NonStrictJSONParser(RegistryJSONParser):
    """Reads NaN/Infinity literals, so a non-finite measurement is refused by name (400 naming
    the field) rather than as an unreadable body; the size, depth and NUL/surrogate checks of the
    API's parser still apply."""

    strict = False


@extend_schema(
    summary="Report a run executed on the authors' own cluster",
    description=(
        "Authors only. One request per run: seed, measurements {arm: {metric: value}}, the "
        "parameters used (must equal the experiment's), hardware, environment. Stored as a "
        "self-reported reproduction with one succeeded run; effects are recomputed. Registry runs "
        "outrank self-reported ones in every verdict."
    ),
    request=SelfReportedRunSerializer,
    responses={
        201: RunSerializer,
        400: error("Invalid input: `errors` names each field (a measurement by `measurements.arm.metric`)."),
        403: error("Not an author of the finding."),
        404: error("No such experiment the caller may see."),
    },
)
@api_view(["POST"])
@permission_classes([permissions.IsAuthenticated])
@parser_classes([NonStrictJSONParser])
def self_reported_run_create(request: Request, pk: int) -> Response:
    experiment = experiment_list(user=request.user).select_related("finding").filter(pk=pk).first()
    if experiment is None:
        raise NotFound(f"no experiment {pk}")
    ensure_reporting_author(experiment, request.user)  # before validation: a stranger learns nothing from a 400
    serializer = SelfReportedRunSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    run = self_reported_run_record(experiment=experiment, user=request.user, **serializer.validated_data)
    return Response(RunSerializer(run, context={"request": request}).data, status=status.HTTP_201_CREATED)
