"""Operations: Prometheus metrics at /metrics, run ids and request ids in the logs."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from registry.api.metrics import METRIC_NAMES
from registry.effects.models import FindingEffects
from registry.events.models import Delivery, DeliveryAttempt, Event, Subscription
from registry.logcontext import ContextFilter, JsonFormatter, TextFormatter, request_id_var, run_context
from registry.reproductions.models import Reproduction, Run, WorkerPresence
from worker import broker

State = Run.State


def scrape(client, **extra) -> dict[tuple[str, tuple], float]:
    """GET /metrics: {(sample name, sorted labels): value}."""
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def make_run(reproduction: Reproduction, state: str, *, queue: str = "cpu", duration_s: float | None = None,
             finished_ago_s: float = 60.0) -> Run:
    now = timezone.now()
    fields: dict = {"reproduction": reproduction, "seed": Run.objects.count(), "state": state, "queue": queue}
    if duration_s is not None:
        fields["finished_at"] = now - timedelta(seconds=finished_ago_s)
        fields["started_at"] = fields["finished_at"] - timedelta(seconds=duration_s)
    return Run.objects.create(**fields)


@pytest.fixture
def reproduction(experiment, user) -> Reproduction:
    Run.objects.all().delete()
    return Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=[0])


@pytest.mark.django_db
def test_metrics_report_runs_by_state_queue_and_duration(anon, reproduction):
    for _ in range(3):
        make_run(reproduction, State.QUEUED)
    make_run(reproduction, State.QUEUED, queue="gpu")
    Run.objects.filter(queue="gpu").update(created_at=timezone.now() - timedelta(seconds=120))
    make_run(reproduction, State.RUNNING)
    for duration in (10, 20, 30, 40):
        make_run(reproduction, State.SUCCEEDED, duration_s=duration)
    make_run(reproduction, State.FAILED, duration_s=100)
    make_run(reproduction, State.CANCELLED, duration_s=5)  # not executed to its end: no duration
    make_run(reproduction, State.SUCCEEDED, duration_s=999, finished_ago_s=2 * 3600)  # outside the window

    samples = scrape(anon)

    assert value(samples, "registry_runs", state="queued", queue="cpu") == 3
    assert value(samples, "registry_runs", state="queued", queue="gpu") == 1
    assert value(samples, "registry_runs", state="running", queue="cpu") == 1
    assert value(samples, "registry_runs", state="succeeded", queue="cpu") == 5
    assert value(samples, "registry_runs", state="failed", queue="cpu") == 1
    assert value(samples, "registry_runs", state="timed_out", queue="cpu") == 0
    assert 119 <= value(samples, "registry_run_oldest_queued_age_seconds") < 180
    assert value(samples, "registry_runs_finished_recent", state="succeeded") == 4
    assert value(samples, "registry_runs_finished_recent", state="failed") == 1
    assert value(samples, "registry_runs_finished_recent", state="cancelled") == 1
    # durations in the window: 10, 20, 30, 40, 100 (nearest rank)
    assert value(samples, "registry_run_duration_recent_seconds", quantile="0.5") == pytest.approx(30)
    assert value(samples, "registry_run_duration_recent_seconds", quantile="0.95") == pytest.approx(100)
    assert value(samples, "registry_run_duration_recent_seconds", quantile="1") == pytest.approx(100)
    for part in ("runs", "broker", "workers", "effects", "webhooks"):
        assert value(samples, "registry_metrics_collect_errors", part=part) == 0


@pytest.mark.django_db
def test_metrics_report_effects_webhooks_and_workers(anon, user, make_finding):
    FindingEffects.objects.all().delete()
    findings = [make_finding(title=f"Finding {n}") for n in range(4)]
    FindingEffects.objects.all().delete()  # whatever creating them requested
    long_ago = timezone.now() - timedelta(seconds=300)
    FindingEffects.objects.create(finding=findings[0], pending=True, requested_at=long_ago)
    FindingEffects.objects.create(finding=findings[1], pending=True, requested_at=timezone.now())
    FindingEffects.objects.create(finding=findings[2], error="ZeroDivisionError")
    FindingEffects.objects.create(finding=findings[3])

    Delivery.objects.all().delete()
    subscription = Subscription.objects.create(owner=user, name="hook", url="https://example.org/hook")
    Subscription.objects.create(owner=user, name="dead", url="https://example.org/dead", active=False,
                                disabled_reason="20 failures in a row")
    statuses = [Delivery.Status.PENDING, Delivery.Status.DELIVERED, Delivery.Status.DELIVERED, Delivery.Status.FAILED]
    for status in statuses:
        delivery = Delivery.objects.create(subscription=subscription, event=Event.objects.create(type="x"),
                                           status=status)
        DeliveryAttempt.objects.create(
            delivery=delivery, number=1, status_code=200 if status == Delivery.Status.DELIVERED else 500,
            error="" if status == Delivery.Status.DELIVERED else "HTTP 500", attempted_at=timezone.now(),
        )

    WorkerPresence.objects.all().delete()
    WorkerPresence.objects.create(hostname="a", queues=["cpu", "maintenance"], last_seen=timezone.now())
    WorkerPresence.objects.create(hostname="b", queues=["cpu", "gpu"], last_seen=timezone.now())
    WorkerPresence.objects.create(hostname="gone", queues=["gpu"], last_seen=timezone.now() - timedelta(days=1))

    samples = scrape(anon)

    assert value(samples, "registry_effects_recomputes_pending") == 2
    assert 299 <= value(samples, "registry_effects_recompute_oldest_pending_age_seconds") < 400
    assert value(samples, "registry_effects_recomputes_failed") == 1
    assert value(samples, "registry_webhook_deliveries", status="pending") == 1
    assert value(samples, "registry_webhook_deliveries", status="delivered") == 2
    assert value(samples, "registry_webhook_deliveries", status="failed") == 1
    assert value(samples, "registry_webhook_attempts_recent", outcome="delivered") == 2
    assert value(samples, "registry_webhook_attempts_recent", outcome="failed") == 2
    assert value(samples, "registry_webhook_subscriptions_disabled") == 1
    assert value(samples, "registry_workers_seen", queue="cpu") == 2
    assert value(samples, "registry_workers_seen", queue="gpu") == 1
    assert value(samples, "registry_workers_seen", queue="maintenance") == 1


@pytest.mark.redis
@pytest.mark.django_db
def test_queue_depth_and_beat_age_come_from_redis(anon, settings):
    settings.CELERY_BROKER_KEY_PREFIX = prefix = f"metrics-{uuid.uuid4().hex[:8]}:"
    client = broker.redis_client()
    keys = [f"{prefix}cpu", f"{prefix}gpu", f"{prefix}gpu\x06\x163", f"{prefix}unacked", f"{prefix}{broker.BEAT_KEY}"]
    try:
        client.rpush(f"{prefix}cpu", "m1", "m2", "m3")
        client.rpush(f"{prefix}gpu", "m4")
        client.rpush(f"{prefix}gpu\x06\x163", "m5")  # a message of priority 3: kombu's own key
        client.hset(f"{prefix}unacked", mapping={"tag1": "m6"})
        broker.beat_record(time.time() - 42)

        samples = scrape(anon)

        assert value(samples, "registry_broker_up") == 1
        assert value(samples, "registry_queue_depth", queue="cpu") == 3
        assert value(samples, "registry_queue_depth", queue="gpu") == 2
        assert value(samples, "registry_queue_depth", queue="maintenance") == 0
        assert value(samples, "registry_broker_unacked") == 1
        assert 42 <= value(samples, "registry_beat_last_seen_age_seconds") < 60

        client.lpop(f"{prefix}cpu")
        assert value(scrape(anon), "registry_queue_depth", queue="cpu") == 2
    finally:
        client.delete(*keys)


@pytest.mark.django_db
def test_an_unreachable_broker_is_reported_not_fatal(anon, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    settings.BROKER_SOCKET_TIMEOUT_S = 0.5
    broker.reset_client()
    try:
        samples = scrape(anon)
    finally:
        broker.reset_client()
    assert value(samples, "registry_broker_up") == 0
    assert not any(name == "registry_queue_depth" for name, _ in samples)
    assert ("registry_runs", (("queue", "cpu"), ("state", "queued"))) in samples


@pytest.mark.django_db
def test_every_documented_metric_is_exposed(anon, settings):
    settings.METRICS_TOKEN = ""
    body = anon.get("/metrics").content.decode()
    always = set(METRIC_NAMES) - {
        # need Redis (and a beat record) or a finished run
        "registry_broker_up", "registry_queue_depth", "registry_broker_unacked",
        "registry_beat_last_seen_age_seconds",
    }
    for name in always:
        assert f"# TYPE {name} gauge" in body, name


@pytest.mark.django_db
def test_django_prometheus_request_metrics_by_view(anon):
    assert anon.get("/healthz").status_code == 200
    samples = scrape(anon)
    count = value(
        samples, "django_http_requests_latency_seconds_by_view_method_count", view="api:healthz", method="GET"
    )
    assert count >= 1
    assert value(
        samples, "django_http_responses_total_by_status_view_method_total",
        status="200", view="api:healthz", method="GET",
    ) >= 1


@pytest.mark.django_db
def test_metrics_is_not_the_plugin_metric_catalogue(anon):
    response = anon.get("/api/v1/metrics/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")


@pytest.mark.django_db
def test_metrics_are_refused_to_remote_and_proxied_clients_without_a_token(anon, settings):
    settings.METRICS_TOKEN = ""
    response = anon.get("/metrics", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 403
    assert response.json()["detail"].startswith("metrics are served to local clients only")
    # through a proxy on this host: REMOTE_ADDR is loopback, the client is not
    assert anon.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403
    assert anon.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert anon.get("/metrics").status_code == 200  # 127.0.0.1
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert anon.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert anon.get("/metrics").status_code == 403
    assert anon.post("/metrics").status_code == 405


@pytest.mark.django_db
def test_metrics_token_is_required_when_set(anon, settings):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    assert anon.get("/metrics").status_code == 403  # even from loopback
    assert anon.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert anon.get("/metrics", HTTP_AUTHORIZATION="Token s3cret-metrics-token").status_code == 403
    response = anon.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret-metrics-token")
    assert response.status_code == 200
    assert b"registry_runs" in response.content


# --- logs -------------------------------------------------------------------------------------


def test_log_records_inside_a_run_context_carry_the_run_id(caplog):
    caplog.handler.addFilter(ContextFilter())
    log = logging.getLogger("worker.runner")
    with caplog.at_level(logging.INFO):
        with run_context(42):
            log.info("inside")
        log.info("outside")
    inside, outside = caplog.records
    assert inside.run_id == 42 and inside.context == " [run_id=42]"
    assert outside.run_id is None and outside.context == ""


def test_run_execute_logs_carry_the_run_id(caplog, monkeypatch):
    """worker/runner.py's run_execute sets the context around the whole execution."""
    from worker import runner

    def claim(*, run_id: int, worker_host: str) -> None:
        logging.getLogger("registry.reproductions.services").warning("claiming")
        return None

    monkeypatch.setattr(runner.services, "run_claim_loaded", claim)
    monkeypatch.setattr(runner, "close_old_connections", lambda: None)  # no database in this test
    caplog.handler.addFilter(ContextFilter())
    assert runner.run_execute(7313).startswith("skipped")
    (record,) = [r for r in caplog.records if r.getMessage() == "claiming"]
    assert record.run_id == 7313


def test_logging_settings_put_the_context_filter_on_the_console(settings):
    console = settings.LOGGING["handlers"]["console"]
    assert console["filters"] == ["context"]
    assert settings.LOGGING["filters"]["context"]["()"] == "registry.logcontext.ContextFilter"
    root_filters = [f for handler in logging.getLogger().handlers for f in handler.filters]
    assert any(isinstance(f, ContextFilter) for f in root_filters)


def test_json_and_text_formats():
    record = logging.LogRecord("worker.runner", logging.ERROR, __file__, 1, "run %s failed", (5,), None)
    with run_context(5):
        token = request_id_var.set("req-1")
        try:
            ContextFilter().filter(record)
        finally:
            request_id_var.reset(token)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["run_id"] == 5 and entry["request_id"] == "req-1"
    assert entry["message"] == "run 5 failed" and entry["level"] == "ERROR" and entry["logger"] == "worker.runner"
    text = TextFormatter("%(levelname)s %(name)s%(context)s: %(message)s").format(record)
    assert text == "ERROR worker.runner [run_id=5 request_id=req-1]: run 5 failed"
    bare = logging.LogRecord("x", logging.INFO, __file__, 1, "no context", (), None)
    assert TextFormatter("%(name)s%(context)s: %(message)s").format(bare) == "x: no context"


# --- request ids -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_request_id_is_generated(anon):
    first, second = anon.get("/healthz"), anon.get("/healthz")
    assert len(first["X-Request-ID"]) == 32 and int(first["X-Request-ID"], 16) >= 0
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.django_db
def test_a_valid_incoming_request_id_is_echoed_an_invalid_one_replaced(anon):
    assert anon.get("/healthz", HTTP_X_REQUEST_ID="lb-7f3a:01").get("X-Request-ID") == "lb-7f3a:01"
    for bad in ("has space", "x" * 129, "<script>", "a\u00e9"):
        echoed = anon.get("/healthz", HTTP_X_REQUEST_ID=bad)["X-Request-ID"]
        assert echoed != bad and len(echoed) == 32
    # on API errors and 404s too
    assert anon.get("/api/v1/nowhere/", HTTP_X_REQUEST_ID="abc").get("X-Request-ID") == "abc"


@pytest.mark.django_db
def test_request_logs_carry_the_request_id(anon, caplog):
    caplog.handler.addFilter(ContextFilter())
    with caplog.at_level(logging.WARNING, logger="django.request"):
        anon.get("/api/v1/findings/999999/", HTTP_X_REQUEST_ID="trace-me-1")
    records = [r for r in caplog.records if r.name == "django.request"]
    assert records and all(r.request_id == "trace-me-1" for r in records)
    assert request_id_var.get() is None  # cleared once the response is closed
