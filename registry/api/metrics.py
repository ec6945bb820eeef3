"""Prometheus metrics at ``/metrics`` (the plugins' metric catalogue is ``/api/v1/metrics/``).

Two sources in one exposition:

* django-prometheus: requests, responses, latency and exceptions by view and method
  (``django_http_*``), counted by its middleware pair in this process.
* ``RegistryCollector``: the registry's own state, read at scrape time from the database and the
  broker with a few cheap queries, so every web process reports the same values and the worker
  processes need no exporter of their own (``registry_*``, listed in ``METRIC_NAMES``).

Access (``metrics_view``): with ``METRICS_TOKEN`` set, a request must send
``Authorization: Bearer <token>``; without it, only clients in ``METRICS_ALLOWED_NETWORKS``
(default: loopback) that did not come through a proxy (no ``X-Forwarded-For``, ``Forwarded`` or
``X-Real-IP`` header) are served. Anything else is a 403 (JSON).

Under a multi-process server set ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess
mode) to add up the request metrics of every process; the registry's own are computed per scrape.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

#: kombu's Redis transport keeps a queue's messages of priority p > 0 in ``<queue>\x06\x16<p>``.
_KOMBU_PRIORITY_SEP = "\x06\x16"
_KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)
_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
_QUANTILES = (("0.5", 0.5), ("0.95", 0.95), ("1", 1.0))
#: At most this many recently finished runs are read for the duration quantiles.
DURATION_SAMPLE_LIMIT = 10_000

#: The registry's own metrics (all gauges: values read at scrape time) and what each means.
METRIC_NAMES: dict[str, str] = {
    "registry_runs": "Runs by state and queue.",
    "registry_run_oldest_queued_age_seconds": "Age of the oldest queued run (0 when none is queued).",
    "registry_runs_finished_recent": "Runs finished within METRICS_RECENT_WINDOW_S, by state.",
    "registry_run_duration_recent_seconds": (
        "Wall time (started to finished) of the runs that succeeded, failed or timed out within "
        "METRICS_RECENT_WINDOW_S: quantiles 0.5, 0.95 and 1 (the longest)."
    ),
    "registry_broker_up": "1 when the Redis broker answered this scrape, 0 when not (absent without Redis).",
    "registry_queue_depth": "Messages waiting in a broker queue (Redis LLEN of the queue's keys).",
    "registry_broker_unacked": "Messages delivered to workers and not yet acknowledged.",
    "registry_beat_last_seen_age_seconds": "Seconds since the beat last triggered the reaper (absent if never).",
    "registry_workers_seen": "Workers seen within GPU_WORKER_SEEN_WINDOW_S, by queue they consume.",
    "registry_effects_recomputes_pending": "Findings whose effects recompute is requested and not done.",
    "registry_effects_recompute_oldest_pending_age_seconds": "Age of the oldest pending effects recompute.",
    "registry_effects_recomputes_failed": "Findings whose last effects recompute failed.",
    "registry_webhook_deliveries": "Webhook deliveries by status (pending, delivered, failed).",
    "registry_webhook_attempts_recent": "Webhook delivery attempts within METRICS_RECENT_WINDOW_S, by outcome.",
    "registry_webhook_subscriptions_disabled": "Webhook subscriptions disabled after repeated failures.",
    "registry_metrics_collect_errors": "1 for a part of the registry's metrics that could not be read this scrape.",
}


def _gauge(name: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, METRIC_NAMES[name], labels=list(labels))


def _age_s(moment: Any, now: Any) -> float:
    return max(0.0, (now - moment).total_seconds()) if moment is not None else 0.0


def _quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of a sorted, non-empty list."""
    rank = math.ceil(q * len(sorted_values))
    return sorted_values[max(0, min(len(sorted_values), rank) - 1)]


class RegistryCollector(Collector):
    """The registry's own gauges, computed at each scrape. A part that fails (database or broker
    unreachable) is left out and flagged in ``registry_metrics_collect_errors``; the scrape and
    the other parts still answer."""

    def describe(self) -> list[Metric]:
        # Not collect(): registering must not query the database.
        return [GaugeMetricFamily(name, doc) for name, doc in METRIC_NAMES.items()]

    def collect(self) -> Iterator[Metric]:
        errors = _gauge("registry_metrics_collect_errors", ["part"])
        for part, collect in (
            ("runs", self._runs), ("broker", self._broker), ("workers", self._workers),
            ("effects", self._effects), ("webhooks", self._webhooks),
        ):
            try:
                metrics = list(collect())
            except Exception:  # noqa: BLE001 - one failing part must not fail the scrape
                logger.warning("metrics: could not collect %s", part, exc_info=True)
                errors.add_metric([part], 1)
                continue
            errors.add_metric([part], 0)
            yield from metrics
        yield errors

    @staticmethod
    def _window() -> timedelta:
        return timedelta(seconds=float(settings.METRICS_RECENT_WINDOW_S))

    def _runs(self) -> Iterator[Metric]:
        from registry.reproductions.models import Reproduction, Run

        now = timezone.now()
        runs = _gauge("registry_runs", ["state", "queue"])
        counts = {(state, queue): 0 for state in Run.State.values for queue in ("cpu", "gpu")}
        for row in Run.objects.order_by().values("state", "queue").annotate(n=Count("id")):
            counts[(row["state"], row["queue"])] = row["n"]
        for (state, queue), n in sorted(counts.items()):
            runs.add_metric([state, queue], n)
        yield runs

        oldest = Run.objects.filter(state=Run.State.QUEUED).aggregate(oldest=Min("created_at"))["oldest"]
        yield GaugeMetricFamily(
            "registry_run_oldest_queued_age_seconds", METRIC_NAMES["registry_run_oldest_queued_age_seconds"],
            value=_age_s(oldest, now),
        )

        since = now - self._window()
        finished = _gauge("registry_runs_finished_recent", ["state"])
        finished_counts = dict.fromkeys(
            (Run.State.SUCCEEDED, Run.State.FAILED, Run.State.TIMED_OUT, Run.State.CANCELLED), 0
        )
        recent = Run.objects.order_by().filter(finished_at__gte=since)
        for row in recent.values("state").annotate(n=Count("id")):
            finished_counts[row["state"]] = row["n"]
        for state, n in finished_counts.items():
            finished.add_metric([state], n)
        yield finished

        # Runs the registry executed (not self-reported), from claim to end.
        timed = (
            recent.filter(
                state__in=[Run.State.SUCCEEDED, Run.State.FAILED, Run.State.TIMED_OUT],
                started_at__isnull=False, reproduction__source=Reproduction.Source.REGISTRY,
            )
            .order_by("-finished_at")
            .values_list("started_at", "finished_at")[:DURATION_SAMPLE_LIMIT]
        )
        durations = sorted(max(0.0, (end - start).total_seconds()) for start, end in timed)
        duration = _gauge("registry_run_duration_recent_seconds", ["quantile"])
        if durations:
            for label, q in _QUANTILES:
                duration.add_metric([label], _quantile(durations, q))
        yield duration

    def _broker(self) -> Iterator[Metric]:
        from worker import broker

        if not broker.is_redis():
            return
        up = _gauge("registry_broker_up")
        try:
            client = broker.redis_client()
            prefix = settings.CELERY_BROKER_KEY_PREFIX
            queues = queue_names()
            pipe = client.pipeline(transaction=False)
            for queue in queues:
                for step in _KOMBU_PRIORITY_STEPS:
                    pipe.llen(f"{prefix}{queue}{_KOMBU_PRIORITY_SEP}{step}" if step else f"{prefix}{queue}")
            pipe.hlen(f"{prefix}unacked")
            pipe.get(f"{prefix}{broker.BEAT_KEY}")
            *lengths, unacked, beat = pipe.execute()
        except Exception:  # noqa: BLE001 - reported as down
            logger.warning("metrics: the broker did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = _gauge("registry_queue_depth", ["queue"])
        steps = len(_KOMBU_PRIORITY_STEPS)
        for index, queue in enumerate(queues):
            depth.add_metric([queue], sum(lengths[index * steps:(index + 1) * steps]))
        yield depth
        unacked_gauge = _gauge("registry_broker_unacked")
        unacked_gauge.add_metric([], unacked)
        yield unacked_gauge
        if beat is not None:
            age = _gauge("registry_beat_last_seen_age_seconds")
            age.add_metric([], max(0.0, time.time() - float(beat)))
            yield age

    def _workers(self) -> Iterator[Metric]:
        from registry.reproductions.models import WorkerPresence

        since = timezone.now() - timedelta(seconds=float(settings.GPU_WORKER_SEEN_WINDOW_S))
        counts = dict.fromkeys(queue_names(), 0)
        for queues in WorkerPresence.objects.filter(last_seen__gte=since).values_list("queues", flat=True):
            for queue in queues or []:
                counts[queue] = counts.get(queue, 0) + 1
        workers = _gauge("registry_workers_seen", ["queue"])
        for queue, n in sorted(counts.items()):
            workers.add_metric([queue], n)
        yield workers

    def _effects(self) -> Iterator[Metric]:
        from registry.effects.models import FindingEffects

        now = timezone.now()
        pending = FindingEffects.objects.filter(pending=True).aggregate(n=Count("id"), oldest=Min("requested_at"))
        yield GaugeMetricFamily(
            "registry_effects_recomputes_pending", METRIC_NAMES["registry_effects_recomputes_pending"],
            value=pending["n"],
        )
        yield GaugeMetricFamily(
            "registry_effects_recompute_oldest_pending_age_seconds",
            METRIC_NAMES["registry_effects_recompute_oldest_pending_age_seconds"],
            value=_age_s(pending["oldest"], now),
        )
        yield GaugeMetricFamily(
            "registry_effects_recomputes_failed", METRIC_NAMES["registry_effects_recomputes_failed"],
            value=FindingEffects.objects.exclude(error="").count(),
        )

    def _webhooks(self) -> Iterator[Metric]:
        from registry.events.models import Delivery, DeliveryAttempt, Subscription

        deliveries = _gauge("registry_webhook_deliveries", ["status"])
        counts = dict.fromkeys(Delivery.Status.values, 0)
        for row in Delivery.objects.order_by().values("status").annotate(n=Count("id")):
            counts[row["status"]] = row["n"]
        for status, n in counts.items():
            deliveries.add_metric([status], n)
        yield deliveries

        since = timezone.now() - self._window()
        recent = DeliveryAttempt.objects.filter(attempted_at__gte=since)
        total = recent.count()
        failed = recent.exclude(error="").count()
        attempts = _gauge("registry_webhook_attempts_recent", ["outcome"])
        attempts.add_metric(["delivered"], total - failed)
        attempts.add_metric(["failed"], failed)
        yield attempts
        yield GaugeMetricFamily(
            "registry_webhook_subscriptions_disabled", METRIC_NAMES["registry_webhook_subscriptions_disabled"],
            value=Subscription.objects.filter(active=False).exclude(disabled_reason="").count(),
        )


def queue_names() -> list[str]:
    """The Celery queues (worker/celery.py)."""
    from worker.celery import app

    return [queue.name for queue in app.conf.task_queues]


_collector = RegistryCollector()
_registered = False


def _registry() -> CollectorRegistry:
    """The registry to expose: the process's own (django-prometheus registers there), or under
    prometheus_client's multiprocess mode a fresh one adding up every process's files. The
    registry's collector is registered once."""
    import os

    global _registered
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(_collector)
        return registry
    if not _registered:
        try:
            REGISTRY.register(_collector)
        except ValueError:  # already registered (a module reloaded)
            pass
        _registered = True
    return REGISTRY


def _client_is_local(request: HttpRequest) -> bool:
    if any(request.META.get(header) for header in _PROXY_HEADERS):
        return False  # came through a proxy: REMOTE_ADDR is the proxy's, not the client's
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", "").split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.METRICS_ALLOWED_NETWORKS)


def metrics_allowed(request: HttpRequest) -> bool:
    """``METRICS_TOKEN`` set: the bearer token (compared in constant time). Unset: a client in
    ``METRICS_ALLOWED_NETWORKS`` that did not come through a proxy."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    return _client_is_local(request)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: Prometheus text exposition (OpenMetrics when the scraper asks for it)."""
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse({"detail": f"method {request.method} not allowed", "errors": {}}, status=405)
        response["Allow"] = "GET, HEAD"
        return response
    if not metrics_allowed(request):
        detail = (
            "a valid 'Authorization: Bearer' metrics token is required" if settings.METRICS_TOKEN
            else "metrics are served to local clients only (set METRICS_TOKEN or METRICS_ALLOWED_NETWORKS)"
        )
        return JsonResponse({"detail": detail, "errors": {}}, status=403)
    registry = _registry()
    if "application/openmetrics-text" in request.headers.get("Accept", ""):
        response = HttpResponse(generate_openmetrics(registry), content_type=OPENMETRICS_CONTENT_TYPE)
    else:
        response = HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
