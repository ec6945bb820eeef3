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
from registry.api.schema import QUOTA_429, error
from registry.api.serializers import RunSerializer, StrictCharField
from registry.api.series_views import SeriesInputField
from registry.effects.selectors import (
    LANDSCAPE_PAGE_SIZE,
    MAX_LANDSCAPE_PAGE_SIZE,
    landscape_get,
    rollup_get,
)
from registry.errors import ApplicationError, NotFound
from registry.findings.models import Finding
from registry.findings.selectors import finding_list
from registry.reproductions.self_reported import (
    batch_limits,
    ensure_reporting_author,
    experiment_for_report,
    self_reported_run_record,
    self_reported_runs_record,
)

ERROR = error("Invalid input: `errors` names each field.")


@extend_schema(
    summary="Safety vs capability across findings",
    description=(
        "Every visible finding's safety and capability scores (with intervals) and lean flag; the "
        "aggregate counts (safety-leaning, capability-leaning, dual, neither); the correlation of the "
        "two scores across findings; per plugin, the capabilities correlation of each safety metric "
        "(Ren et al. 2024); and each theory's lineage roll-up counts. See docs/statistics.md. The aggregates "
        "cover every finding; the points (`findings`), their residuals in `differential_progress.findings` and "
        "`lineage` are one page (`page_info`: `count`, `next`, `previous`), so the response stays small."
    ),
    parameters=[
        OpenApiParameter("tag", str, description="Only findings with this tag."),
        OpenApiParameter("kind", str, enum=list(Finding.Kind.values), description="Only findings of this kind."),
        OpenApiParameter("plugin", str, description="Only findings with an experiment of this plugin."),
        OpenApiParameter("page", int, description="Page of points (by finding id), from 1; the aggregates cover "
                         "every finding whatever the page."),
        OpenApiParameter("page_size", int, description=f"Points per page (default {LANDSCAPE_PAGE_SIZE}, capped at "
                         f"{MAX_LANDSCAPE_PAGE_SIZE})."),
    ],
    responses={200: OpenApiTypes.OBJECT, 400: ERROR, 404: error("No such page of points (past the last one).")},
)
@api_view(["GET"])
@permission_classes([permissions.AllowAny])
def landscape(request: Request) -> Response:
    kind = query_text(request, "kind")
    if kind is not None and kind not in Finding.Kind.values:
        raise ApplicationError(
            f"unknown kind {kind!r}; choose one of {', '.join(Finding.Kind.values)}", field="kind"
        )
    page, page_size = _positive(request, "page"), _positive(request, "page_size")
    data = landscape_get(
        user=request.user,
        tag=query_text(request, "tag"),
        kind=kind,
        plugin=query_text(request, "plugin"),
        page=page,
        page_size=page_size,
    )
    info = data["page_info"]
    if not data["findings"] and info["page"] > 1:
        raise NotFound(f"no page {info['page']}")
    info["next"] = _page_link(request, info["page"] + 1) if info["has_next"] else None
    info["previous"] = _page_link(request, info["page"] - 1) if info["has_previous"] else None
    return Response(data)


def _positive(request: Request, name: str) -> int | None:
    """A whole number of at least 1 from the query string, or None; anything else a 400 naming it."""
    raw = query_text(request, name, max_length=12)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise ApplicationError(f"{name} must be a whole number of at least 1", field=name)
    return int(raw)


def _page_link(request: Request, number: int) -> str:
    params = request.query_params.copy()
    params["page"] = str(number)
    return request.build_absolute_uri(f"{request.path}?{params.urlencode()}")


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
    series = SeriesInputField(
        required=False, default=None,
        help_text="Optional training curves: [{arm, name, steps: [int], values: [number]}] (at most 32; "
        "longer than 10,000 points: thinned as a worker thins ctx.log_series).",
    )


class NonStrictJSONParser(RegistryJSONParser):
    """Reads NaN/Infinity literals, so a non-finite measurement is refused by name (400 naming
    the field) rather than as an unreadable body; the size, depth and NUL/surrogate checks of the
    API's parser still apply."""

    strict = False


def _experiment_for_write(request: Request, pk: int) -> Any:
    """The experiment, if the caller may see it (one query for an author, see
    ``experiment_for_report``), without reading its reproductions or runs."""
    return experiment_for_report(user=request.user, pk=pk)


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
    # no prefetch of the experiment's reproductions: a write must not read all of them (O(runs))
    experiment = _experiment_for_write(request, pk)
    if experiment is None:
        raise NotFound(f"no experiment {pk}")
    ensure_reporting_author(experiment, request.user)  # before validation: a stranger learns nothing from a 400
    serializer = SelfReportedRunSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    run = self_reported_run_record(experiment=experiment, user=request.user, **serializer.validated_data)
    return Response(RunSerializer(run, context={"request": request}).data, status=status.HTTP_201_CREATED)


class SelfReportedBatchItemSerializer(serializers.Serializer):
    """One run of a batch: the single-run request's fields; the batch's defaults fill the gaps."""

    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1)
    measurements = MeasurementsField(help_text="{arm: {metric: value}}: every declared arm and metric.")
    params = serializers.JSONField(required=False, help_text="Defaults to the batch's `params`.")
    hardware = StrictCharField(max_length=200, required=False, help_text="Defaults to the batch's `hardware`.")
    environment = serializers.JSONField(required=False, help_text="Defaults to the batch's `environment`.")
    plugin_version = StrictCharField(max_length=50, required=False, allow_blank=True)
    series = SeriesInputField(required=False, help_text="Optional curves, as in the single-run request.")


class SelfReportedBatchSerializer(serializers.Serializer):
    """Documents the request; the service validates it (all or nothing, naming ``runs[i].field``)."""

    runs = SelfReportedBatchItemSerializer(many=True, help_text="The runs, 1 to SELF_REPORTED_BATCH_MAX_RUNS.")
    params = serializers.JSONField(required=False, help_text="The parameters every run used, unless it says otherwise.")
    hardware = StrictCharField(max_length=200, required=False, help_text="'cpu' or the GPU model, for every run.")
    environment = serializers.JSONField(required=False, help_text="torch/CUDA versions, host, ... for every run.")
    plugin_version = StrictCharField(max_length=50, required=False, allow_blank=True)


class SelfReportedBatchResultSerializer(serializers.Serializer):
    experiment = serializers.IntegerField()
    reproductions = serializers.ListField(child=serializers.IntegerField())
    runs = serializers.ListField(child=serializers.IntegerField(), help_text="Run ids, in the order of the request.")
    measurements = serializers.IntegerField(help_text="Measurements stored in all.")


@extend_schema(
    summary="Report many runs executed on the authors' own cluster (batch)",
    description=(
        "Authors only. Like the single-run endpoint, for up to SELF_REPORTED_BATCH_MAX_RUNS runs "
        "(1,000) and SELF_REPORTED_BATCH_MAX_MEASUREMENTS measurements (100,000) in one request: "
        "`runs` is a list of `{seed, measurements, params?, hardware?, environment?, "
        "plugin_version?}`; the batch's own `params`, `hardware`, `environment` and "
        "`plugin_version` fill what a run leaves out. All or nothing: the first invalid run is a "
        "400 naming it (`runs[3].measurements.baseline.risk`) and nothing is stored. Stored with "
        "bulk inserts in one transaction (one self-reported reproduction per device), one "
        "`run.finished` event per run as the single-run endpoint writes it, one effects recompute; "
        "every run counts against the daily quota. Honours `Idempotency-Key`."
    ),
    request=SelfReportedBatchSerializer,
    responses={
        201: SelfReportedBatchResultSerializer,
        400: error("Invalid input: `errors` names the run and its field (`runs[3].seed`)."),
        403: error("Not an author of the finding."),
        404: error("No such experiment the caller may see."),
        413: error("More runs or measurements than one batch holds, or a body over API_MAX_BODY_BYTES."),
        429: QUOTA_429,
    },
)
@api_view(["POST"])
@permission_classes([permissions.IsAuthenticated])
@parser_classes([NonStrictJSONParser])
def self_reported_runs_batch_create(request: Request, pk: int) -> Response:
    # no prefetch of the experiment's reproductions: a write must not read all of them (O(runs))
    experiment = _experiment_for_write(request, pk)
    if experiment is None:
        raise NotFound(f"no experiment {pk}")
    ensure_reporting_author(experiment, request.user)  # before validation: a stranger learns nothing from a 400
    body = request.data
    if not isinstance(body, dict):
        raise ApplicationError("the body must be a JSON object {runs: [...], ...}", field="runs")
    unknown = sorted(set(body) - {"runs", "params", "hardware", "environment", "plugin_version"})
    if unknown:
        raise ApplicationError(f"unknown fields {unknown}", field=unknown[0])
    if "runs" not in body:
        max_runs, _ = batch_limits()
        raise ApplicationError(f"runs is required: a list of 1 to {max_runs} runs", field="runs")
    defaults = {k: body[k] for k in ("params", "hardware", "environment", "plugin_version") if k in body}
    runs = self_reported_runs_record(experiment=experiment, user=request.user, runs=body["runs"], **defaults)
    data = {
        "experiment": experiment.pk,
        "reproductions": sorted({run.reproduction_id for run in runs}),
        "runs": [run.pk for run in runs],
        "measurements": sum(run.n_measurements for run in runs),
    }
    return Response(data, status=status.HTTP_201_CREATED)
