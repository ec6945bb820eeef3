"""The landscape's cached parts (plugins, capabilities correlations) follow the reader's
visibility: a user who loses access to a restricted finding stops seeing what came from it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from registry.findings.services import author_withdraw
from tests.effects.builders import experiment_for
from tests.factories import FindingFactory

pytestmark = pytest.mark.django_db


def _plugins(client) -> list[str]:
    body = client.get("/api/v1/landscape/").json()
    return [entry["plugin"] for entry in body["capabilities_correlation"]]


def test_withdrawn_author_no_longer_sees_the_hidden_findings_plugins(user, other_user, client_for):
    cache.clear()
    hidden = FindingFactory(created_by=user, authors=[other_user], visibility="restricted",
                            embargo_until=timezone.now() + timedelta(days=30))
    experiment_for(hidden)
    reader = client_for(other_user)
    assert _plugins(reader) == ["echo"]  # an author: sees it (and the answer is cached)
    author_withdraw(finding=hidden, user=other_user, username=other_user.username)
    assert reader.get(f"/api/v1/findings/{hidden.pk}/").status_code == 404  # hidden from them now
    assert _plugins(reader) == []
