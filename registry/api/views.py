"""Thin API views: parse with a serializer, call one service or selector, render."""

from __future__ import annotations

import logging
import time

from django.db.models import prefetch_related_objects
from django.http import FileResponse, JsonResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from plugins.registry import all_plugins
from registry.api import serializers as s
from registry.api.errors import query_text
from registry.api.filtersets import ExperimentFilter, FindingFilter, ReproductionFilter, RunFilter
from registry.api.pagination import EstimatedCountPagination
from registry.api.schema import CONFLICT_409, QUOTA_429, error
from registry.api.throttling import ReproductionThrottledMixin
from registry.errors import ApplicationError, NotFound, PermissionDenied
from registry.events.cursor import events_after
from registry.findings import services as finding_services
from registry.findings.models import Claim, Finding
from registry.findings.selectors import finding_lineage, finding_list
from registry.reproductions import selectors as repro_selectors
from registry.reproductions import services as repro_services
from registry.reproductions.models import Artifact, MetricDefinition

logger = logging.getLogger(__name__)


class CanEditFinding(permissions.BasePermission):
    """Writes on a finding (and adding claims or experiments to it): its authors or staff only,
    checked before the body is validated so that a stranger learns nothing from a 400."""

    message = "only the finding's authors or staff may change it"

    def has_object_permission(self, request: Request, view, obj) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        return finding_services.finding_can_edit(finding=obj, user=request.user)


_EDIT_403 = error("Not an author of the finding, nor staff.")


@extend_schema_view(
    list=extend_schema(
        description="The findings the caller may see (public ones; restricted ones they are named in; their own), "
        "newest first, paginated; filtered by kind, status, tag, plugin, author, axis and a text query `q`."
    ),
    create=extend_schema(
        description="Register a finding; the caller is its first author. Other names in `authors` are invited "
        "(they appear once they accept).",
        responses={201: s.FindingSerializer},
    ),
    retrieve=extend_schema(description="One finding with its current claims, experiments and lineage links."),
    update=extend_schema(
        description="Replace a finding's editable fields (its authors or staff).",
        responses={200: s.FindingSerializer, 403: _EDIT_403},
    ),
    partial_update=extend_schema(
        description="Change some of a finding's fields (its authors or staff).",
        responses={200: s.FindingSerializer, 403: _EDIT_403},
    ),
    destroy=extend_schema(
        description="Delete a finding with its claims, experiments and runs (its authors or staff); followers "
        "get a `finding.deleted` event.",
        responses={204: None, 403: _EDIT_403},
    ),
)
class FindingViewSet(ReproductionThrottledMixin, viewsets.ModelViewSet):
    serializer_class = s.FindingSerializer
    permission_classes = [permissions.IsAuthenticatedOrReadOnly, CanEditFinding]
    filterset_class = FindingFilter
    pagination_class = EstimatedCountPagination  # no count of the whole table on every page
    ordering_fields = ["created_at", "updated_at", "title", "status"]
    ordering = ["-created_at", "-id"]  # the index Finding(-created_at, -id)
    reproduction_throttled_actions = ("experiments",)  # POST queues the first reproduction

    def get_queryset(self):
        # linked findings only those the reader may see: a constant number of queries per page
        # (related rows as plain lists, see finding_list)
        return finding_list(user=self.request.user, linked_visible="lists")

    def perform_create(self, serializer: s.FindingSerializer) -> None:
        serializer.instance = finding_services.finding_create(user=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer: s.FindingSerializer) -> None:
        serializer.instance = finding_services.finding_update(
            finding=serializer.instance, user=self.request.user, data=serializer.validated_data
        )

    def perform_destroy(self, finding: Finding) -> None:
        finding_services.finding_delete(finding=finding, user=self.request.user)

    @extend_schema(
        methods=["GET"],
        description="The finding's claims: the current version of each (all versions with `history=true`); "
        "a bare list, not paginated.",
        parameters=[OpenApiParameter("history", str, enum=["true", "false", "1", "0"],
                                    description="Include superseded versions.")],
        responses={200: s.ClaimSerializer(many=True)},
    )
    @extend_schema(
        methods=["POST"],
        description="Add a claim to the finding (its authors or staff); `supersedes` names a claim of this "
        "finding that the new one replaces as a new version.",
        request=s.ClaimSerializer,
        responses={201: s.ClaimSerializer, 403: _EDIT_403},
    )
    @action(
        detail=True, methods=["get", "post"], serializer_class=s.ClaimSerializer, pagination_class=None,
        filter_backends=[],
    )
    def claims(self, request: Request, pk: str | None = None) -> Response:
        finding = self.get_object()
        if request.method == "GET":
            claims = finding.claims.all()
            history = request.query_params.get("history")
            if history not in (None, "", "0", "1", "true", "false"):
                raise ApplicationError("history must be true or false", field="history")
            if history not in ("1", "true"):
                claims = claims.filter(is_current=True)
            return Response(s.ClaimSerializer(claims.select_related("verdict"), many=True).data)
        serializer = s.ClaimSerializer(data=request.data, context={"finding": finding})
        serializer.is_valid(raise_exception=True)
        claim = finding_services.claim_create(finding=finding, user=request.user, **serializer.validated_data)
        return Response(s.ClaimSerializer(claim).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        methods=["GET"],
        description="The finding's experiments (retracted ones included, marked); a bare list, not paginated.",
        responses={200: s.ExperimentSerializer(many=True)},
    )
    @extend_schema(
        methods=["POST"],
        description="Add an experiment (a plugin with parameters) to the finding (its authors or staff). With "
        "`reproduce` (the default) its first reproduction is queued at once, within the caller's run quota.",
        request=s.ExperimentSerializer,
        responses={201: s.ExperimentSerializer, 403: _EDIT_403, 429: QUOTA_429},
    )
    @action(
        detail=True, methods=["get", "post"], serializer_class=s.ExperimentSerializer, pagination_class=None,
        filter_backends=[],
    )
    def experiments(self, request: Request, pk: str | None = None) -> Response:
        finding = self.get_object()
        if request.method == "GET":
            experiments = finding.experiments.prefetch_related("reproductions")
            return Response(s.ExperimentSerializer(experiments, many=True).data)
        finding_services._ensure_can_edit(finding, request.user)  # before validation: a stranger learns nothing
        serializer = s.ExperimentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        experiment = repro_services.experiment_create(finding=finding, user=request.user, **serializer.validated_data)
        return Response(s.ExperimentSerializer(experiment).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        description="The findings this one builds on and those built upon it, transitively, as far as the "
        "caller may see them.",
        responses={200: OpenApiTypes.OBJECT},
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def lineage(self, request: Request, pk: str | None = None) -> Response:
        finding = self.get_object()
        return Response({"finding": finding.pk, **finding_lineage(finding=finding, user=request.user)})

    @extend_schema(
        description="The finding's measured effects: per claim and metric, the pooled estimate with its interval "
        "and verdict, and its safety and capability scores. See docs/statistics.md. A summary whose size does "
        "not grow with the number of runs: lists of run ids and per-reproduction effects and verdicts are "
        "replaced by their counts (`n_runs`, `n_reproductions`) and served with `?detail=runs` (the "
        "`detail_url` link).",
        parameters=[
            OpenApiParameter(
                "detail", str, enum=["runs"],
                description="`runs`: also the run ids and the per-reproduction effects and verdicts.",
            )
        ],
        responses={200: OpenApiTypes.OBJECT, 400: error("`detail` is not `runs`.")},
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def effects(self, request: Request, pk: str | None = None) -> Response:
        from registry.effects.selectors import finding_effects_get

        finding = self.get_object()
        detail = query_text(request, "detail")
        if detail not in (None, "runs"):
            raise ApplicationError("detail must be 'runs' (or left out for the summary)", field="detail")
        # summary and detail read in one query: both from the same computation
        data = finding_effects_get(finding=finding, user=request.user, detail=detail == "runs")
        if detail == "runs":
            return Response(data)
        url = request.build_absolute_uri(request.path)
        return Response({**data, "detail_url": f"{url}?detail=runs"})


@extend_schema_view(
    retrieve=extend_schema(description="One claim (any version) of a finding the caller may see."),
)
class ClaimViewSet(mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet):
    serializer_class = s.ClaimSerializer
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self):
        return Claim.objects.filter(finding__in=finding_list(user=self.request.user)).select_related("verdict")

    @extend_schema(
        request=s.ClaimUpdateSerializer,
        responses={200: s.ClaimSerializer, 403: _EDIT_403, 409: error(
            f"{CONFLICT_409}: a superseded version, or a claim with reproductions (supersede it instead)."
        )},
        description="Edit a claim in place (its finding's authors or staff) while no run exists for its finding; "
        "only direction, thresholds, unit and statement.",
    )
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        claim = self.get_object()
        if not finding_services.finding_can_edit(finding=claim.finding, user=request.user):
            # before validation: a stranger learns nothing from a 400
            raise PermissionDenied("only the finding's authors or staff may change it")
        serializer = s.ClaimUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        claim = finding_services.claim_update(claim=claim, user=request.user, data=serializer.validated_data)
        return Response(s.ClaimSerializer(claim).data)


@extend_schema_view(
    list=extend_schema(
        description="The experiments of the findings the caller may see, paginated; filtered by finding and plugin."
    ),
    retrieve=extend_schema(description="One experiment with its reproductions' ids."),
)
class ExperimentViewSet(ReproductionThrottledMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.ExperimentSerializer
    reproduction_throttled_actions = ("reproductions",)
    filterset_class = ExperimentFilter

    def get_queryset(self):
        experiments = repro_selectors.experiment_list(user=self.request.user)
        if self.action in ("reproductions", "retract"):
            # one experiment: its reproductions are not loaded to find it (a write costs the same
            # at its 1st and its 10,000th reproduction)
            experiments = experiments.prefetch_related(None)
        return experiments

    @extend_schema(
        methods=["GET"],
        description="The experiment's reproductions with their runs, newest first; a bare list, not paginated.",
        responses={200: s.ReproductionSerializer(many=True)},
    )
    @extend_schema(
        methods=["POST"],
        description="Queue a reproduction: one run per seed (`seeds`, or `n_seeds`, or the experiment's default), "
        "within the caller's run quota. Any signed-in user may reproduce a finding they can see.",
        request=s.ReproductionRequestSerializer,
        responses={202: s.ReproductionSerializer, 429: QUOTA_429},
    )
    @action(
        detail=True, methods=["get", "post"], serializer_class=s.ReproductionRequestSerializer,
        pagination_class=None, filter_backends=[],
    )
    def reproductions(self, request: Request, pk: str | None = None) -> Response:
        experiment = self.get_object()
        if request.method == "GET":
            reproductions = repro_selectors.reproduction_list(user=request.user).filter(experiment=experiment)
            return Response(s.ReproductionSerializer(reproductions, many=True, context={"request": request}).data)
        serializer = s.ReproductionRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reproduction = repro_services.reproduction_request(
            experiment=experiment, user=request.user, **serializer.validated_data
        )
        # the runs as they are now (a worker may have started one), read once for runs, state and outcome
        prefetch_related_objects([reproduction], "runs")
        data = s.ReproductionSerializer(reproduction, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=s.ExperimentRetractSerializer,
        responses={200: s.ExperimentSerializer, 403: error("Not an author of the finding, nor staff."),
                   409: error(f"{CONFLICT_409}: the experiment is already retracted.")},
    )
    @action(
        detail=True, methods=["post"], serializer_class=s.ExperimentRetractSerializer,
        permission_classes=[permissions.IsAuthenticated],
    )
    def retract(self, request: Request, pk: str | None = None) -> Response:
        """Retract the experiment (its authors or staff): kept and shown, excluded from effects."""
        experiment = self.get_object()
        # The service checks who may retract before it looks at the reason: a stranger learns
        # nothing from a 400.
        reason = request.data.get("reason") if isinstance(request.data, dict) else None
        experiment = finding_services.experiment_retract(experiment=experiment, user=request.user, reason=reason)
        return Response(s.ExperimentSerializer(experiment).data)


@extend_schema_view(
    list=extend_schema(
        description="The reproductions the caller may see, with their runs, paginated; filtered by finding, "
        "experiment, plugin and state."
    ),
    retrieve=extend_schema(description="One reproduction with its runs."),
)
class ReproductionViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.ReproductionSerializer
    filterset_class = ReproductionFilter

    def get_queryset(self):
        return repro_selectors.reproduction_list(user=self.request.user)


@extend_schema_view(
    list=extend_schema(
        description="The runs the caller may see, paginated; filtered by finding, experiment, reproduction and state."
    ),
    retrieve=extend_schema(
        description="One run with its measurements, artifacts, logs and error (worker hosts for signed-in "
        "callers only)."
    ),
)
class RunViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.RunSerializer
    filterset_class = RunFilter
    ordering_fields = ["id", "created_at", "finished_at"]

    def get_queryset(self):
        return repro_selectors.run_list(user=self.request.user)

    @extend_schema(
        request=None,
        responses={200: s.RunSerializer, 403: error("Neither the requester of the run, an author, nor staff."),
                   409: error(f"{CONFLICT_409}: the run has already finished.")},
        description="Cancel a queued or running run (its requester, the finding's authors or staff).",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()
        repro_services.run_cancel(run=run, user=request.user)
        run.refresh_from_db()
        return Response(s.RunSerializer(run, context={"request": request}).data)


@extend_schema(
    description="An artifact's file as stored, with its own content type: `image/png` for the plugins' "
    "figures, `application/json` for curves and tables, `application/octet-stream` otherwise.",
    responses={
        (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="The artifact's bytes."),
        (200, "application/json"): OpenApiResponse(OpenApiTypes.BINARY, description="The artifact's bytes."),
        (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="The artifact's bytes."),
        404: error("No such artifact the caller may see, or its file is missing from storage."),
    },
)
@api_view(["GET"])
@permission_classes([permissions.AllowAny])
def artifact_download(request: Request, pk: int) -> FileResponse:
    artifact = get_object_or_404(
        Artifact, pk=pk, run__in=repro_selectors.run_list(user=request.user)
    )
    path = repro_services.artifact_path(artifact)
    if not path.exists():
        raise NotFound("the artifact's file is missing from storage")
    response = FileResponse(path.open("rb"), content_type=artifact.content_type, as_attachment=False)
    response["Content-Disposition"] = f'inline; filename="{artifact.name}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; sandbox"
    return response


def plugin_describe(name: str) -> dict:
    entry = all_plugins().get(name)
    if entry is None:
        raise NotFound(f"no plugin called {name!r}")
    data: dict = {"name": name, "available": entry.available, "error": entry.error or None, "source": entry.source}
    experiment = entry.experiment
    if experiment is not None:
        data.update(
            version=experiment.version,
            api_version=experiment.api_version,
            description=(experiment.__doc__ or "").strip(),
            params_schema=experiment.params_schema(),
            metrics=[
                {
                    "name": m.name, "axis": m.axis.value, "higher_is_better": m.higher_is_better,
                    "unit": m.unit, "description": m.description, "version": m.version,
                    "scale": str(m.scale), "time_to_event": m.time_to_event,
                }
                for m in experiment.metrics
            ],
            arms=list(experiment.arms),
            resources={"device": experiment.resources.device, "time_limit_s": experiment.resources.time_limit_s},
            presets=experiment.presets,
            recommended_seeds=getattr(experiment, "recommended_seeds", None),
        )
    return data


class PluginSerializer(serializers.Serializer):
    """An installed plugin (the fields after ``source`` only when it loaded)."""

    name = serializers.CharField()
    available = serializers.BooleanField()
    error = serializers.CharField(allow_null=True, help_text="Why the plugin failed to load, if it did.")
    source = serializers.CharField()
    version = serializers.CharField(required=False)
    api_version = serializers.CharField(required=False)
    description = serializers.CharField(required=False)
    params_schema = serializers.JSONField(required=False, help_text="The JSON Schema of its parameters.")
    metrics = serializers.ListField(child=serializers.DictField(), required=False)
    arms = serializers.ListField(child=serializers.CharField(), required=False)
    resources = serializers.DictField(required=False)
    presets = serializers.JSONField(required=False)
    recommended_seeds = serializers.IntegerField(
        required=False, allow_null=True,
        help_text="Seeds per reproduction the plugin recommends (the default of a new experiment); null: 3.",
    )


class MetricDefinitionSerializer(serializers.Serializer):
    plugin = serializers.CharField()
    name = serializers.CharField()
    version = serializers.IntegerField()
    plugin_version = serializers.CharField()
    axis = serializers.CharField()
    higher_is_better = serializers.BooleanField()
    unit = serializers.CharField()
    description = serializers.CharField()
    scale = serializers.CharField()
    time_to_event = serializers.BooleanField()


EVENT_PAGE = inline_serializer(
    "EventPage",
    {
        "events": inline_serializer(
            "Event",
            {
                "id": serializers.IntegerField(), "type": serializers.CharField(),
                "finding": serializers.IntegerField(allow_null=True), "plugin": serializers.CharField(),
                "payload": serializers.JSONField(), "created_at": serializers.DateTimeField(),
            },
            many=True,
        ),
        "next": serializers.IntegerField(help_text="The cursor for the next page (`after=`)."),
    },
)


@extend_schema(
    description="Every installed experiment plugin (built-in and entry points) with its parameters' schema, "
    "metrics, arms, resources and presets; one that failed to load has `available: false` and its `error`. "
    "A bare list.",
    responses={200: PluginSerializer(many=True)},
)
@api_view(["GET"])
@permission_classes([permissions.AllowAny])
def plugin_list(request: Request) -> Response:
    return Response([plugin_describe(name) for name in sorted(all_plugins())])


@extend_schema(
    operation_id="v1_plugins_detail",
    description="One plugin, as in the list.",
    responses={200: PluginSerializer, 404: error("No plugin of that name.")},
)
@api_view(["GET"])
@permission_classes([permissions.AllowAny])
def plugin_detail(request: Request, name: str) -> Response:
    return Response(plugin_describe(name))


@extend_schema(
    description="The metric catalogue as recorded: every plugin's metrics with their axis (safety or "
    "capability), direction, unit and scale. A bare list.",
    parameters=[
        OpenApiParameter("plugin", str, description="Only this plugin's metrics."),
        OpenApiParameter("axis", str, enum=list(MetricDefinition.Axis.values), description="Only this axis."),
    ],
    responses={200: MetricDefinitionSerializer(many=True)},
)
@api_view(["GET"])
@permission_classes([permissions.AllowAny])
def metric_list(request: Request) -> Response:
    """The metric catalogue as recorded (synced at migrate, worker start-up and when an experiment
    is created: a GET never writes)."""
    metrics = MetricDefinition.objects.all()
    axis = query_text(request, "axis")
    if axis and axis not in MetricDefinition.Axis.values:
        raise ApplicationError(
            f"axis must be one of {', '.join(MetricDefinition.Axis.values)}", field="axis"
        )
    plugin = query_text(request, "plugin")
    if plugin:
        metrics = metrics.filter(plugin=plugin)
    if axis:
        metrics = metrics.filter(axis=axis)
    return Response(
        list(metrics.values("plugin", "name", "version", "plugin_version", "axis", "higher_is_better", "unit",
                            "description", "scale", "time_to_event"))
    )


@extend_schema(
    parameters=[
        OpenApiParameter("after", int, description="Return events with an id above this cursor."),
        OpenApiParameter("type", str, description="Comma-separated event types."),
        OpenApiParameter("finding", int, description="Only this finding's events."),
        OpenApiParameter("limit", int, description="At most this many events (1 to 1000, default 100)."),
    ],
    description="The events the caller may see after a cursor, oldest first, with the cursor of the next page "
    "(`next`). Also live as server-sent events (`/api/v1/events/stream`) and as an Atom feed "
    "(`/api/v1/events/feed.atom`).",
    responses={200: EVENT_PAGE},
)
@api_view(["GET"])
@permission_classes([permissions.AllowAny])
def events(request: Request) -> Response:
    def integer(name: str, default: int, low: int, high: int) -> int:
        raw = request.query_params.get(name)
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApplicationError(f"{name} must be an integer", field=name) from None
        return max(low, min(high, value))

    after = integer("after", 0, 0, 2**62)
    limit = integer("limit", 100, 1, 1000)
    finding = request.query_params.get("finding")
    types = [t for t in (query_text(request, "type", max_length=2000) or "").split(",") if t]
    # One commit-ordered cursor (registry.events.cursor): never past an event that may still commit
    # below it. Hidden events are left out of the scan, so a hidden finding answers like an absent one.
    events = events_after(
        after, limit=limit, visible_to=request.user, types=types or None,
        finding_id=integer("finding", 0, 0, 2**62) if finding else None,
    )
    rows = [
        {"id": event.id, "type": event.type, "finding": event.finding_id, "plugin": event.plugin,
         "payload": event.payload, "created_at": event.created_at.isoformat()}
        for event in events
    ]
    next_cursor = events[-1].id if events else after
    return Response({"events": rows, "next": next_cursor})


def _safe_methods_only(view):
    """GET and HEAD; any other method a JSON 405 with Allow (CSRF-exempt: these views write nothing)."""
    import functools

    from django.views.decorators.csrf import csrf_exempt

    @csrf_exempt
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.method not in ("GET", "HEAD"):
            response = JsonResponse({"detail": f'Method "{request.method}" not allowed.', "errors": {}}, status=405)
            response["Allow"] = "GET, HEAD"
            return response
        return view(request, *args, **kwargs)

    return wrapped


class _ProbeSchema(APIView):
    """The probes' OpenAPI description (the views themselves are plain Django functions)."""

    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []
    description = ""
    operation_id = ""

    def get(self, request: Request) -> Response:  # pragma: no cover - never routed
        raise NotImplementedError


_CHECKS = inline_serializer(
    "Readiness",
    {
        "status": serializers.ChoiceField(choices=["ok", "unavailable"]),
        "checks": serializers.DictField(child=serializers.CharField()),
    },
)


class HealthzSchema(_ProbeSchema):
    @extend_schema(
        operation_id="healthz_retrieve",
        description="Liveness: the web process answers (checks nothing else).",
        responses={200: inline_serializer("Liveness", {"status": serializers.CharField()})},
    )
    def get(self, request: Request) -> Response:  # pragma: no cover
        raise NotImplementedError


class ReadyzSchema(_ProbeSchema):
    @extend_schema(
        operation_id="readyz_retrieve",
        description="Readiness within 2 s: database, broker and beat, each `ok` or a short reason (never an "
        "exception's text), and the plugins available. 503 with Retry-After when not ready.",
        responses={200: _CHECKS, 503: OpenApiResponse(_CHECKS, description="Not ready (Retry-After).")},
    )
    def get(self, request: Request) -> Response:  # pragma: no cover
        raise NotImplementedError


@_safe_methods_only
def healthz(request) -> JsonResponse:
    return JsonResponse({"status": "ok"})


healthz.cls = HealthzSchema  # type: ignore[attr-defined]  # listed in the OpenAPI schema
healthz.initkwargs = {}  # type: ignore[attr-defined]


#: /readyz answers within this many seconds, whatever hangs (each check runs in its own thread).
READYZ_DEADLINE_S = 1.8


def _check_database() -> str:
    """A fresh connection (with a 1 s connect timeout on PostgreSQL) and SELECT 1."""
    from django.db import connections

    conn = connections["default"]
    params = conn.get_connection_params()
    if conn.vendor == "postgresql":
        params["connect_timeout"] = 1
        # the driver's own connect: get_new_connection would borrow from the web server's pool
        # (ignoring the timeout), and closing a borrowed connection would never give it back
        raw = conn.Database.connect(**params)
    else:
        raw = conn.get_new_connection(params)
    try:
        cursor = raw.cursor()
        cursor.execute("SELECT 1")
        cursor.fetchone()
    finally:
        raw.close()
    return "ok"


def _check_broker() -> str:
    from worker import broker

    if broker.is_redis():
        broker.redis_client().ping()
        return "ok"
    from worker.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=1)
    return "ok"


def _check_beat() -> str:
    """The beat (the reaper's trigger) is seen by its last trigger; never seen: not failed (the web
    may start before the beat's first tick; without Redis there is no record)."""
    import time

    from django.conf import settings

    from worker import broker

    last = broker.beat_last_seen()
    if last is None:
        return "not seen"
    age = time.time() - last
    return "ok" if age <= settings.BEAT_MISSING_AFTER_S else f"missing for {int(age)} s"


@_safe_methods_only
def readyz(request) -> JsonResponse:
    """Readiness within READYZ_DEADLINE_S: database, broker and beat, each "ok" or a short reason
    (never an exception's text: it may hold addresses or credentials)."""
    import threading

    checks_to_run = {"database": _check_database, "broker": _check_broker, "beat": _check_beat}
    results: dict[str, str] = {}

    def run(name: str) -> None:
        try:
            results[name] = checks_to_run[name]()
        except Exception:  # noqa: BLE001 - reported as unavailable, logged in full
            logger.warning("readiness check %s failed", name, exc_info=True)
            results[name] = "unavailable"

    threads = [threading.Thread(target=run, args=(name,), daemon=True) for name in checks_to_run]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + READYZ_DEADLINE_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    checks = {name: results.get(name, "unavailable") for name in checks_to_run}
    plugins = all_plugins()
    checks["plugins"] = f"{sum(e.available for e in plugins.values())}/{len(plugins)} available"
    ready = checks["database"] == "ok" and checks["broker"] == "ok" and not checks["beat"].startswith("missing")
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    response = JsonResponse(body, status=200 if ready else 503)
    if not ready:
        response["Retry-After"] = "5"
    return response


readyz.cls = ReadyzSchema  # type: ignore[attr-defined]  # listed in the OpenAPI schema
readyz.initkwargs = {}  # type: ignore[attr-defined]
