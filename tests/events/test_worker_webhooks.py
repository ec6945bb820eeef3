"""The periodic task through a real Celery worker on real Redis and PostgreSQL."""

import pytest

from registry.events.models import Delivery
from registry.events.services import subscription_create
from tests.conftest import wait_for
from tests.events.helpers import emit, finding, webhook_receiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis, pytest.mark.worker]


def test_webhooks_sweep_task_delivers(celery_worker, user):
    from worker.celery import app

    with webhook_receiver() as receiver:
        subscription, _ = subscription_create(owner=user, name="hook", url=receiver.url)
        event = emit("finding.created", finding(created_by=user))
        app.send_task("worker.webhooks_sweep", queue="maintenance")
        wait_for(lambda: Delivery.objects.filter(subscription=subscription, status="delivered").exists(), timeout=90)
        assert len(receiver.requests) == 1, celery_worker.output()[-3000:]
        assert receiver.requests[0].headers["X-Registry-Event"] == "finding.created"
    assert Delivery.objects.get(subscription=subscription).event_id == event.pk


def test_a_worker_reconnects_after_its_database_connections_were_cut(celery_worker, user):
    """A database outage kills the worker's kept connections: its next tasks reconnect (a worker
    that reused a dead connection failed every task after one, forever)."""
    from django.db import connection

    from worker.celery import app

    with webhook_receiver() as receiver:
        subscription, _ = subscription_create(owner=user, name="hook", url=receiver.url)
        emit("finding.created", finding(created_by=user))
        app.send_task("worker.webhooks_sweep", queue="maintenance")
        wait_for(lambda: Delivery.objects.filter(subscription=subscription, status="delivered").count() == 1,
                 timeout=90)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND application_name = 'registry-worker'"
            )
            assert cursor.fetchone()[0] >= 1  # the worker kept its connection between tasks
        app.send_task("worker.runs_reap", queue="maintenance")  # its first query is outside a transaction
        emit("finding.created", finding(created_by=user))

        def delivered_twice() -> bool:
            app.send_task("worker.webhooks_sweep", queue="maintenance")  # the first may meet the dead connection
            return Delivery.objects.filter(subscription=subscription, status="delivered").count() == 2

        wait_for(delivered_twice, timeout=60, interval=1.0)
        assert len(receiver.requests) == 2, celery_worker.output()[-3000:]
