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

