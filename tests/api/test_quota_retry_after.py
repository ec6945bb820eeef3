"""The daily cap's Retry-After when the window's runs vanished between the count and the listing
(a finding deleted concurrently): the whole window, not an IndexError (a 500)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from registry.reproductions import quotas

pytestmark = pytest.mark.django_db


def test_fewer_runs_than_counted_answers_the_whole_window(user):
    # counted 5 runs in the window, but none are left when they are listed
    retry_after = quotas._daily_retry_after(user, used=5, requested=1, limit=5, now=timezone.now(),
                                             partial_hour_runs=0)
    assert retry_after == int(quotas.DAY.total_seconds())
