"""Migration 0007 reversed: a follower of a finding deleted since (``finding=NULL, finding_ref=X``)
is deleted, as the CASCADE of the old schema would have, and does not become a follow-everything
subscription."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("events", "0006_event_audience")]
AFTER = [("events", "0007_delivery_attempts")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_reversing_0007_deletes_followers_of_deleted_findings(user):
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        apps = _migrate(AFTER)
        Subscription = apps.get_model("events", "Subscription")
        common = {"owner_id": user.pk, "channel": "feed"}
        orphan = Subscription.objects.create(name="followed a deleted finding", finding_ref=987654, **common)
        everything = Subscription.objects.create(name="follows everything", **common)
        tagged = Subscription.objects.create(name="follows a tag", tag="sae", **common)

        apps = _migrate(BEFORE)
        Subscription = apps.get_model("events", "Subscription")
        remaining = set(Subscription.objects.values_list("pk", flat=True))
        assert orphan.pk not in remaining  # not turned into "follow everything"
        assert remaining == {everything.pk, tagged.pk}
        assert Subscription.objects.filter(finding__isnull=True, tag="").count() == 1

        apps = _migrate(AFTER)  # and forward again
        Subscription = apps.get_model("events", "Subscription")
        assert set(Subscription.objects.values_list("pk", flat=True)) == {everything.pk, tagged.pk}
    finally:
        _migrate(latest)
