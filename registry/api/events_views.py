"""Subscriber-side API: subscriptions (CRUD + delivery log), the live event stream (SSE) and the
Atom feed. Thin: parse, call a service or selector, render."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.syndication.views import Feed
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import NoReverseMatch, reverse
from django.utils.feedgenerator import Atom1Feed
from django.utils.html import escape
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, permissions, renderers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from registry.api.errors import query_text
from registry.api.schema import CONFLICT_409, error, rate_limited
from registry.api.serializers import StrictCharField, StrictTextMixin
from registry.api.throttling import client_address
from registry.errors import ApplicationError
from registry.events import services, stream
from registry.events.cursor import events_head, events_latest
from registry.events.models import Delivery, DeliveryAttempt, Event, Subscription
from registry.events.presentation import event_summary, event_title, finding_titles
from registry.events.selectors import measurement_summaries_attach
from registry.findings.models import Finding

# --- Subscriptions -------------------------------------------------------------------------------


class SubscriptionSerializer(StrictTextMixin, serializers.ModelSerializer):
    finding = serializers.IntegerField(
        source="finding_ref", allow_null=True, required=False, min_value=1,
        help_text=(
            "The one finding this subscription follows (or null). When that finding is deleted the "
            "subscription still receives its finding.deleted event (if its owner could read the finding), "
            "with the title in the payload; it keeps this id and stays as it is (active), but matches "
            "nothing new since finding ids are never reused: delete it or point it elsewhere when done."
        ),
    )
    event_types = serializers.ListField(
        child=StrictCharField(max_length=64), required=False, allow_empty=True, max_length=50
    )
    url = StrictCharField(max_length=2000, required=False, allow_blank=True)
    tag = StrictCharField(max_length=64, required=False, allow_blank=True)
    plugin = StrictCharField(max_length=100, required=False, allow_blank=True)

    class Meta:
        model = Subscription
        fields = [
            "id", "name", "channel", "url", "finding", "tag", "plugin", "event_types", "active", "created_at",
            "disabled_reason", "disabled_at",
        ]
        read_only_fields = ["id", "created_at", "disabled_reason", "disabled_at"]


class SubscriptionSecretSerializer(SubscriptionSerializer):
    """A subscription as created, updated or rotated: with the webhook's new signing secret, shown once."""

    secret = serializers.CharField(
        required=False, help_text="The webhook's signing secret (whsec_...): in this answer only, when new."
    )
    previous_secret_expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="After a rotation: until when the former secret still signs."
    )

    class Meta(SubscriptionSerializer.Meta):
        fields = [*SubscriptionSerializer.Meta.fields, "secret", "previous_secret_expires_at"]


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    response_body = serializers.CharField(
        read_only=True, help_text="the first 1 KB of the answer's body, as text, control characters removed"
    )

    class Meta:
        model = DeliveryAttempt
        fields = ["number", "status_code", "latency_ms", "response_body", "error", "attempted_at"]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    """One delivery with its log: ``attempt_log`` has one entry per attempt, oldest first."""

    event_type = serializers.CharField(source="event.type", read_only=True)
    attempt_log = DeliveryAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id", "event", "event_type", "status", "attempts", "last_status_code", "last_latency_ms", "last_error",
            "next_attempt_at", "delivered_at", "created_at", "attempt_log",
        ]


class WebhookPingSerializer(serializers.Serializer):
    webhook_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["delivered", "failed"])
    status_code = serializers.IntegerField(allow_null=True)
    latency_ms = serializers.FloatField()
    error = serializers.CharField(allow_blank=True)


def _service_kwargs(validated: dict[str, Any]) -> dict[str, Any]:
    data = dict(validated)
    if "finding_ref" in data:
        data["finding"] = data.pop("finding_ref")
    return data


@extend_schema_view(
    list=extend_schema(description="The caller's own subscriptions, paginated (never a secret)."),
    create=extend_schema(
        description="Subscribe to events (by finding, tag, plugin, event types) through a webhook (`url`) or the "
        "feed; a webhook's signing secret is in this answer only (`secret`).",
        responses={201: SubscriptionSecretSerializer},
    ),
    retrieve=extend_schema(description="One of the caller's subscriptions."),
    update=extend_schema(
        description="Replace one of the caller's subscriptions; re-enable one with `active`.",
        responses={200: SubscriptionSecretSerializer},
    ),
    partial_update=extend_schema(
        description="Change some fields of one of the caller's subscriptions.",
        responses={200: SubscriptionSecretSerializer},
    ),
    destroy=extend_schema(description="Delete one of the caller's subscriptions with its delivery log."),
)
class SubscriptionViewSet(viewsets.ModelViewSet):
    """The caller's own subscriptions. The webhook secret is in the create response only."""

    serializer_class = SubscriptionSerializer
    permission_classes = [permissions.IsAuthenticated]
    filterset_class = None
    filter_backends: list = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Subscription.objects.none()
        return Subscription.objects.filter(owner=self.request.user).order_by("id")

    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        subscription, secret = services.subscription_create(
            owner=request.user, **_service_kwargs(serializer.validated_data)
        )
        data = SubscriptionSerializer(subscription).data
        if secret:
            data["secret"] = secret
        response = Response(data, status=status.HTTP_201_CREATED)
        response.idempotency_secret_fields = ("secret",)  # never stored for an Idempotency-Key replay
        return response

    def update(self, request: Request, *args, **kwargs) -> Response:
        subscription = self.get_object()
        serializer = self.get_serializer(subscription, data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        subscription, secret = services.subscription_update(
            subscription=subscription, data=_service_kwargs(serializer.validated_data)
        )
        data = SubscriptionSerializer(subscription).data
        if secret:
            data["secret"] = secret
        response = Response(data)
        response.idempotency_secret_fields = ("secret",)  # never stored for an Idempotency-Key replay
        return response

    def perform_destroy(self, subscription: Subscription) -> None:
        services.subscription_delete(subscription=subscription)

    @extend_schema(
        description="The subscription's webhook deliveries, newest first, each with its attempt log; paginated.",
        parameters=[OpenApiParameter("status", str, enum=list(Delivery.Status.values),
                                     description="Only deliveries in this state.")],
        responses={200: DeliverySerializer(many=True)},
    )
    @action(detail=True, methods=["get"], serializer_class=DeliverySerializer)
    def deliveries(self, request: Request, pk: str | None = None) -> Response:
        subscription = self.get_object()
        deliveries = subscription.deliveries.select_related("event").prefetch_related("attempt_log").order_by("-id")
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in Delivery.Status.values:
                raise ApplicationError(f"status must be one of {', '.join(Delivery.Status.values)}", field="status")
            deliveries = deliveries.filter(status=wanted)
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)

    @extend_schema(responses=DeliverySerializer, filters=False)
    @action(
        detail=True, methods=["get"], url_path=r"deliveries/(?P<delivery_id>[0-9]+)",
        serializer_class=DeliverySerializer,
    )
    def delivery(self, request: Request, pk: str | None = None, delivery_id: str | None = None) -> Response:
        """One delivery of this subscription with its attempt log (status code, latency, the start
        of the answer, error, time of each attempt)."""
        subscription = self.get_object()
        delivery = (
            subscription.deliveries.select_related("event").prefetch_related("attempt_log")
            .filter(pk=delivery_id).first()
        )
        if delivery is None:
            raise Http404  # another subscription's delivery looks like an absent one
        return Response(DeliverySerializer(delivery).data)

    @extend_schema(request=None, responses=SubscriptionSecretSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str | None = None) -> Response:
        """A new webhook secret, shown once; the former one keeps signing deliveries (a second
        ``v1,`` signature) for WEBHOOKS_SECRET_ROTATION_GRACE_S."""
        subscription, secret = services.subscription_secret_rotate(subscription=self.get_object())
        data = SubscriptionSerializer(subscription).data
        data["secret"] = secret
        data["previous_secret_expires_at"] = serializers.DateTimeField().to_representation(
            subscription.previous_secret_expires_at
        )
        response = Response(data)
        response.idempotency_secret_fields = ("secret",)  # never stored for an Idempotency-Key replay
        return response

    @extend_schema(
        request=None,
        responses={
            202: DeliverySerializer,
            400: error("Not a webhook subscription."),
            409: error(f"{CONFLICT_409}: the subscription is inactive, or an attempt is being sent now."),
        },
    )
    @action(
        detail=True, methods=["post"], url_path=r"deliveries/(?P<delivery_id>[0-9]+)/redeliver",
        serializer_class=DeliverySerializer,
    )
    def redeliver(self, request: Request, pk: str | None = None, delivery_id: str | None = None) -> Response:
        """Queue a new attempt of one delivery now, with the same ``webhook-id``."""
        subscription = self.get_object()
        delivery = subscription.deliveries.select_related("event", "subscription").filter(pk=delivery_id).first()
        if delivery is None:
            raise Http404  # another subscription's delivery looks like an absent one
        delivery = services.delivery_redeliver(delivery)
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=WebhookPingSerializer)
    @action(detail=True, methods=["post"], serializer_class=WebhookPingSerializer)
    def ping(self, request: Request, pk: str | None = None) -> Response:
        """Send a signed ``ping`` to the webhook now; answers its outcome and latency."""
        return Response(services.webhook_ping(self.get_object()))


# --- Server-sent events --------------------------------------------------------------------------
# An async view: under ASGI (uvicorn, gunicorn with uvicorn workers) an open stream is a coroutine
# on the event loop, not a worker (registry/events/stream.py); under WSGI it is a polling iterator.


class EventStreamRenderer(renderers.BaseRenderer):
    media_type = "text/event-stream"
    format = "event-stream"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return json.dumps(data).encode()  # errors only; the stream itself is a StreamingHttpResponse


def event_stream(
    *, user: Any, after: int, timeout_s: float, poll_s: float | None = None, keepalive_s: float | None = None
) -> Iterator[bytes]:
    """The stream as a blocking, polling iterator (what WSGI servers serve)."""
    return stream.event_stream_blocking(
        user=user, after=after, timeout_s=timeout_s, poll_s=poll_s, keepalive_s=keepalive_s
    )


def _int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApplicationError(f"{name} must be an integer", field=name) from None
    return max(low, min(high, value))


def _stream_user(request: HttpRequest) -> Any:
    """The caller, by the API's own authenticators (Token, Session; a test client's forced user)."""
    return Request(request, authenticators=[auth() for auth in api_settings.DEFAULT_AUTHENTICATION_CLASSES]).user


async def _on_this_thread(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    return await sync_to_async(fn, thread_sensitive=True)(*args, **kwargs)


def _json_error(data: dict[str, Any], status_code: int, **headers: str) -> JsonResponse:
    response = JsonResponse(data, status=status_code)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


class EventStreamSchema(APIView):
    """The stream's OpenAPI description (the view itself is the async function below)."""

    permission_classes = [permissions.AllowAny]
    renderer_classes = [renderers.JSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="events_stream_retrieve",
        parameters=[
            OpenApiParameter("after", int, description="resume after this event id (or send Last-Event-ID)"),
            OpenApiParameter("timeout", int, description="close after this many seconds (default 300, max 3600)"),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                OpenApiTypes.STR, description="The stream: `id:`, `event:` (the event type) and `data:` (the "
                "event as JSON) per event, `: keep-alive` comments when idle; closed after `timeout`."
            ),
            (400, "application/json"): error("A bad `after`, `timeout` or Last-Event-ID."),
            (429, "application/json"): rate_limited(
                "Too many open streams for this client or on this server (`scope`); Retry-After."
            ),
        },
        description="Live events the caller may see, as server-sent events (`id:`/`event:`/`data:`), "
        "a `: keep-alive` comment when idle. 429 with Retry-After beyond the open streams allowed "
        "per client or per server.",
    )
    def get(self, request: Request) -> Response:  # pragma: no cover - never routed
        raise NotImplementedError


def _stream_headers(response: HttpResponseBase) -> HttpResponseBase:
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


# CSRF-exempt: the view writes nothing, and any other method than GET/HEAD gets its JSON 405 (not
# Django's HTML 403 page for a POST without a CSRF token).
@csrf_exempt
async def events_stream(request: HttpRequest) -> HttpResponseBase:
    """Live events the caller may see, as server-sent events (``id:``/``event:``/``data:``).
    HEAD answers the same status and headers with an empty body at once, taking no stream slot."""
    if request.method not in ("GET", "HEAD"):
        return _json_error(
            {"detail": f'Method "{request.method}" not allowed.', "errors": {}}, 405, Allow="GET, HEAD"
        )
    asgi = isinstance(request, ASGIRequest)
    read = stream.run_db if asgi else _on_this_thread  # under ASGI: the stream's bounded pool
    try:
        user = await read(_stream_user, request)
    except exceptions.APIException as exc:
        headers = {"WWW_Authenticate": "Token"} if exc.status_code == 401 else {}
        return _json_error({"detail": str(exc.detail), "errors": {}}, exc.status_code, **headers)
    try:
        last_id = request.headers.get("Last-Event-ID")
        if last_id not in (None, ""):
            after = _int_param(last_id, "Last-Event-ID", 0, 0, 2**62)
        else:
            after = _int_param(request.GET.get("after"), "after", -1, 0, 2**62)
        timeout_s = _int_param(
            request.GET.get("timeout"), "timeout", stream.DEFAULT_TIMEOUT_S, 1, stream.MAX_TIMEOUT_S
        )
    except ApplicationError as exc:
        data = exc.as_detail()
        data.setdefault("errors", {})
        return _json_error(data, exc.status)
    if request.method == "HEAD":  # no stream to hold open (nor a slot taken for it)
        return _stream_headers(HttpResponse(b"", content_type="text/event-stream"))
    if after < 0:  # neither ?after= nor Last-Event-ID: live from now, not a replay of the history
        after = await read(events_head)
    client = f"user:{user.pk}" if user.is_authenticated else f"addr:{client_address(request)}"
    try:
        lease = stream.acquire(client)
    except stream.StreamLimitExceeded as exc:
        return _json_error(exc.as_detail(), 429, Retry_After=str(exc.retry_after))
    if asgi:
        content: Any = stream.event_stream(user=user, after=after, timeout_s=timeout_s, lease=lease)
    else:
        content = stream.event_stream_blocking(user=user, after=after, timeout_s=timeout_s, lease=lease)
    response = StreamingHttpResponse(content, content_type="text/event-stream")
    response._resource_closers.append(lease.release)  # also released if the stream never starts
    return _stream_headers(response)


events_stream.cls = EventStreamSchema  # type: ignore[attr-defined]  # listed in the OpenAPI schema
events_stream.initkwargs = {}  # type: ignore[attr-defined]


# --- Atom feed -----------------------------------------------------------------------------------

FEED_SIZE = 50


class EventsAtomFeed(Feed):
    feed_type = Atom1Feed
    title = "Interpretability Findings Registry: events"
    subtitle = "Latest events of the findings registry"

    def get_object(self, request: HttpRequest, *args, **kwargs) -> dict[str, Any]:
        return {"user": request.user, **kwargs}

    def link(self, obj: dict[str, Any]) -> str:
        return reverse("api:event-list")

    def items(self, obj: dict[str, Any]) -> list[Event]:
        events = Event.objects.all()
        if obj.get("finding") is not None:
            events = events.filter(finding_id=obj["finding"])
        if obj.get("tag"):
            events = events.filter(finding_id__in=Finding.objects.filter(tags__name=obj["tag"]).values("id"))
        if obj.get("plugin"):
            events = events.filter(plugin=obj["plugin"])
        latest = events_latest(limit=FEED_SIZE, visible_to=obj["user"], events=events)
        titles = finding_titles(latest)  # one query for all entries
        measurement_summaries_attach(latest)  # one query for all run.finished entries
        for event in latest:
            payload = event.payload if isinstance(event.payload, dict) else {}
            event.finding_title = titles.get(event.finding_id) or payload.get("title")
        return latest

    def item_title(self, item: Event) -> str:
        """For people, e.g. "Run 12 of “<finding title>” finished (succeeded)"; the feed generator
        escapes it (an Atom text construct)."""
        return event_title(item, getattr(item, "finding_title", None))

    def item_description(self, item: Event) -> str:
        """A plain-text summary, HTML-escaped (Django writes ``<summary type="html">``) with line
        breaks kept; the feed generator escapes it once more as XML."""
        text = event_summary(item, getattr(item, "finding_title", None))
        return "<br>\n".join(escape(line) for line in text.split("\n"))

    def item_link(self, item: Event) -> str:
        if item.finding_id:
            try:
                return reverse("dashboard:finding-detail", args=[item.finding_id])
            except NoReverseMatch:
                pass
        return f"{reverse('api:event-list')}?after={item.id - 1}&limit=1"

    def item_guid(self, item: Event) -> str:
        return f"urn:interp-registry:event:{item.id}"

    item_guid_is_permalink = False

    def item_pubdate(self, item: Event):
        return item.created_at

    def item_updateddate(self, item: Event):
        return item.created_at

    def item_categories(self, item: Event) -> list[str]:
        return [item.type] + ([item.plugin] if item.plugin else [])


class EventFeedSchema(APIView):
    """The Atom feed's OpenAPI description (the view itself is the function below)."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(
        operation_id="events_feed_retrieve",
        parameters=[
            OpenApiParameter("finding", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                             description="Only this finding's events."),
            OpenApiParameter("tag", str, description="Only events of findings with this tag (at most 64 characters)."),
            OpenApiParameter("plugin", str, description="Only this plugin's events (at most 100 characters)."),
        ],
        responses={
            (200, "application/atom+xml"): OpenApiResponse(
                OpenApiTypes.STR, description="An Atom 1.0 feed of the latest 50 events the caller may see."
            ),
            (400, "application/json"): error("A bad `finding`, `tag` or `plugin`."),
        },
        description="The latest 50 events the caller may see as an Atom feed, newest first; feed readers may "
        "send an API token (`Authorization: Token ...`).",
    )
    def get(self, request: Request) -> Response:  # pragma: no cover - never routed
        raise NotImplementedError


@csrf_exempt  # writes nothing; any other method than GET/HEAD is a JSON 405
def events_feed(request: HttpRequest) -> HttpResponse:
    """``GET /api/v1/events/feed.atom?finding=&tag=&plugin=``: the latest 50 visible events."""
    if request.method not in ("GET", "HEAD"):
        return _json_error(
            {"detail": f'Method "{request.method}" not allowed.', "errors": {}}, 405, Allow="GET, HEAD"
        )
    params: dict[str, Any] = {}
    try:
        finding = request.GET.get("finding")
        if finding not in (None, ""):
            try:  # not str.isdigit(): "²" is a digit to it, and int() refuses it
                finding_id = int(finding)
            except ValueError:
                finding_id = 0
            if not 1 <= finding_id < 2**63:
                raise ApplicationError("finding must be an integer", field="finding")
            params["finding"] = finding_id
        for name, limit in (("tag", 64), ("plugin", 100)):
            value = query_text(request, name, max_length=limit)
            if value:
                params[name] = value
    except ApplicationError as exc:
        data = exc.as_detail()
        data.setdefault("errors", {})
        return JsonResponse(data, status=exc.status)
    try:  # feed readers send a token too, not only a browser session
        request.user = _stream_user(request)
    except exceptions.APIException as exc:
        headers = {"WWW_Authenticate": "Token"} if exc.status_code == 401 else {}
        return _json_error({"detail": str(exc.detail), "errors": {}}, exc.status_code, **headers)
    return EventsAtomFeed()(request, **params)


events_feed.cls = EventFeedSchema  # type: ignore[attr-defined]  # listed in the OpenAPI schema
events_feed.initkwargs = {}  # type: ignore[attr-defined]
