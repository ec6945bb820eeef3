"""Thin API views: parse with a serializer, call one service or selector, render."""

from __future__ import annotations

import logging
import time

from django.http import FileResponse, JsonResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from plugins.registry import all_plugins
from registry.api import serializers as s
from registry.api.errors import query_text
from registry.api.filtersets import ExperimentFilter, FindingFilter, ReproductionFilter, RunFilter
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


class FindingViewSet(ReproductionThrottledMixin, viewsets.ModelViewSet):
    serializer_class = s.FindingSerializer
    permission_classes = [permissions.IsAuthenticatedOrReadOnly, CanEditFinding]
    filterset_class = FindingFilter
    ordering_fields = ["created_at", "updated_at", "title", "status"]
    ordering = ["-created_at"]
    reproduction_throttled_actions = ("experiments",)  # POST queues the first reproduction

    def get_queryset(self):
        return finding_list(user=self.request.user).prefetch_related("experiments", "built_upon_by", "restricted_to")

    def perform_create(self, serializer: s.FindingSerializer) -> None:
        serializer.instance = finding_services.finding_create(user=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer: s.FindingSerializer) -> None:
        serializer.instance = finding_services.finding_update(
            finding=serializer.instance, user=self.request.user, data=serializer.validated_data
        )

    def perform_destroy(self, finding: Finding) -> None:
        finding_services.finding_delete(finding=finding, user=self.request.user)

    @extend_schema(request=s.ClaimSerializer, responses=s.ClaimSerializer(many=True))
    @action(detail=True, methods=["get", "post"], serializer_class=s.ClaimSerializer)
    def claims(self, request: Request, pk: str | None = None) -> Response:
        finding = self.get_object()
        if request.method == "GET":
            claims = finding.claims.all()
            if request.query_params.get("history") not in ("1", "true"):
                claims = claims.filter(is_current=True)
            return Response(s.ClaimSerializer(claims.select_related("verdict"), many=True).data)
        serializer = s.ClaimSerializer(data=request.data, context={"finding": finding})
        serializer.is_valid(raise_exception=True)
        claim = finding_services.claim_create(finding=finding, user=request.user, **serializer.validated_data)
        return Response(s.ClaimSerializer(claim).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.ExperimentSerializer, responses=s.ExperimentSerializer(many=True))
    @action(detail=True, methods=["get", "post"], serializer_class=s.ExperimentSerializer)
    def experiments(self, request: Request, pk: str | None = None) -> Response:
        finding = self.get_object()
        if request.method == "GET":
            experiments = finding.experiments.prefetch_related("reproductions")
            return Response(s.ExperimentSerializer(experiments, many=True).data)
        serializer = s.ExperimentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        experiment = repro_services.experiment_create(finding=finding, user=request.user, **serializer.validated_data)
        return Response(s.ExperimentSerializer(experiment).data, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["get"])
    def lineage(self, request: Request, pk: str | None = None) -> Response:
        finding = self.get_object()
        return Response({"finding": finding.pk, **finding_lineage(finding=finding, user=request.user)})

    @action(detail=True, methods=["get"])
    def effects(self, request: Request, pk: str | None = None) -> Response:
        from registry.effects.selectors import finding_effects_get

        finding = self.get_object()
        return Response(finding_effects_get(finding=finding, user=request.user))


class ClaimViewSet(mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet):
    serializer_class = s.ClaimSerializer
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self):
        return Claim.objects.filter(finding__in=finding_list(user=self.request.user)).select_related("verdict")

    @extend_schema(request=s.ClaimUpdateSerializer, responses=s.ClaimSerializer)
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        claim = self.get_object()
        if not finding_services.finding_can_edit(finding=claim.finding, user=request.user):
            # before validation: a stranger learns nothing from a 400
            raise PermissionDenied("only the finding's authors or staff may change it")
        serializer = s.ClaimUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        claim = finding_services.claim_update(claim=claim, user=request.user, data=serializer.validated_data)
        return Response(s.ClaimSerializer(claim).data)


class ExperimentViewSet(ReproductionThrottledMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.ExperimentSerializer
    reproduction_throttled_actions = ("reproductions",)
    filterset_class = ExperimentFilter

    def get_queryset(self):
        return repro_selectors.experiment_list(user=self.request.user)

    @extend_schema(request=s.ReproductionRequestSerializer, responses={202: s.ReproductionSerializer})
    @action(detail=True, methods=["get", "post"], serializer_class=s.ReproductionRequestSerializer)
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
        data = s.ReproductionSerializer(reproduction, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=s.ExperimentRetractSerializer, responses=s.ExperimentSerializer)
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


class ReproductionViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.ReproductionSerializer
    filterset_class = ReproductionFilter

    def get_queryset(self):
        return repro_selectors.reproduction_list(user=self.request.user)


class RunViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.RunSerializer
    filterset_class = RunFilter
    ordering_fields = ["id", "created_at", "finished_at"]

    def get_queryset(self):
        return repro_selectors.run_list(user=self.request.user)

    @extend_schema(request=None, responses=s.RunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()
        repro_services.run_cancel(run=run, user=request.user)
        run.refresh_from_db()
        return Response(s.RunSerializer(run, context={"request": request}).data)


@extend_schema(responses={(200, "application/octet-stream"): bytes})
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
        )
    return data


@extend_schema(responses={200: dict})
@api_view(["GET"])
@permission_classes([permissions.AllowAny])
def plugin_list(request: Request) -> Response:
    return Response([plugin_describe(name) for name in sorted(all_plugins())])


@extend_schema(responses={200: dict})
@api_view(["GET"])
@permission_classes([permissions.AllowAny])
def plugin_detail(request: Request, name: str) -> Response:
    return Response(plugin_describe(name))


@extend_schema(
    parameters=[OpenApiParameter("plugin", str), OpenApiParameter("axis", str)], responses={200: dict}
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
        OpenApiParameter("finding", int),
        OpenApiParameter("limit", int),
    ],
    responses={200: dict},
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


def healthz(request) -> JsonResponse:
    return JsonResponse({"status": "ok"})


#: /readyz answers within this many seconds, whatever hangs (each check runs in its own thread).
READYZ_DEADLINE_S = 1.8


def _check_database() -> str:
    """A fresh connection (with a 1 s connect timeout on PostgreSQL) and SELECT 1."""
    from django.db import connections

    conn = connections["default"]
    params = conn.get_connection_params()
    if conn.vendor == "postgresql":
        params["connect_timeout"] = 1
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
