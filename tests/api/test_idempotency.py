"""Idempotency-Key on the API's POSTs (registry/idempotency): a retried create is replayed, never
executed twice; another body under the same key is a 422; a concurrent duplicate is a 409."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.db import OperationalError, connection
from django.utils import timezone
from rest_framework.test import APIClient

from registry.events.models import Subscription
from registry.findings import services as finding_services
from registry.findings.models import Finding
from registry.idempotency.models import IdempotencyRecord
from registry.reproductions.models import Reproduction, Run
from tests.api.helpers import FINDINGS, assert_error, counts

pytestmark = pytest.mark.django_db

KEY = "retry-3f1c2a9e-0b7d-4c55-9d1e-6a2b8c4f0e11"
FINDING = {"title": "Resize-then-convolve removes checkerboards", "kind": "fix", "tags": ["vision"]}


def keyed(client: APIClient, url: str, body: Any, key: str = KEY, **extra: Any) -> Any:
    return client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key, **extra)


def assert_replay_of(replay: Any, first: Any) -> None:
    assert replay.status_code == first.status_code, (replay.status_code, replay.content[:500])
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.content == first.content
    assert replay["Content-Type"] == first["Content-Type"]
    for header in ("Location",):
        assert replay.get(header) == first.get(header)
    assert not first.has_header("Idempotent-Replayed")


# ---------------------------------------------------------------- replays create nothing


def test_a_retried_finding_is_replayed_and_created_once(api):
    first = keyed(api, FINDINGS, FINDING)
    assert first.status_code == 201, first.content
    assert first.has_header("Location")
    before = counts()
    for _ in range(3):
        assert_replay_of(keyed(api, FINDINGS, FINDING), first)
    assert counts() == before
    assert Finding.objects.filter(title=FINDING["title"]).count() == 1


def test_a_retried_claim_is_replayed_and_created_once(api, finding):
    url = f"{FINDINGS}{finding.pk}/claims/"
    body = {"metric": "risk", "direction": "decrease", "min_relative_effect": 0.3}
    first = keyed(api, url, body)
    assert first.status_code == 201, first.content
    before = counts()
    assert_replay_of(keyed(api, url, body), first)
    assert counts() == before


def test_a_retried_experiment_is_replayed_and_created_once(api, finding):
    url = f"{FINDINGS}{finding.pk}/experiments/"
    body = {"plugin": "echo", "default_seeds": 2}
    first = keyed(api, url, body)
    assert first.status_code == 201, first.content
    before = counts()
    assert_replay_of(keyed(api, url, body), first)
    assert counts() == before


def test_a_retried_reproduction_request_is_replayed_and_queues_nothing(api, experiment):
    url = f"/api/v1/experiments/{experiment.pk}/reproductions/"
    first = keyed(api, url, {"seeds": [5, 6, 7]})
    assert first.status_code == 202, first.content
    before = counts()
    reproductions, runs = Reproduction.objects.count(), Run.objects.count()
    for _ in range(3):
        assert_replay_of(keyed(api, url, {"seeds": [5, 6, 7]}), first)
    assert counts() == before
    assert (Reproduction.objects.count(), Run.objects.count()) == (reproductions, runs)


def test_a_retried_subscription_is_replayed_and_created_once(api):
    body = {"name": "follow", "channel": "feed"}
    first = keyed(api, "/api/v1/subscriptions/", body)
    assert first.status_code == 201, first.content
    assert_replay_of(keyed(api, "/api/v1/subscriptions/", body), first)
    assert Subscription.objects.count() == 1


def test_a_4xx_is_stored_and_replayed_like_stripe(api):
    first = keyed(api, FINDINGS, {"title": "", "kind": "fix"})
    assert_error(first, 400, "title")
    assert_replay_of(keyed(api, FINDINGS, {"title": "", "kind": "fix"}), first)


def test_a_session_user_is_keyed_too(user):
    client = APIClient()
    client.force_login(user)  # a real session cookie, authenticated by DRF's SessionAuthentication
    first = keyed(client, FINDINGS, FINDING)
    assert first.status_code == 201, first.content
    assert_replay_of(keyed(client, FINDINGS, FINDING), first)
    assert Finding.objects.count() == 1
    assert IdempotencyRecord.objects.get().user == user


def test_without_a_key_every_post_creates(api):
    assert api.post(FINDINGS, FINDING, format="json").status_code == 201
    assert api.post(FINDINGS, FINDING, format="json").status_code == 201
    assert Finding.objects.count() == 2
    assert not IdempotencyRecord.objects.exists()


# ---------------------------------------------------------------- conflicts and bad keys


def test_the_same_key_with_another_body_or_path_is_a_422(api, finding):
    assert keyed(api, FINDINGS, FINDING).status_code == 201
    before = counts()
    assert_error(keyed(api, FINDINGS, {**FINDING, "title": "Another title"}), 422, "Idempotency-Key")
    assert_error(keyed(api, f"{FINDINGS}{finding.pk}/claims/", {"metric": "risk", "direction": "decrease"}),
                 422, "Idempotency-Key")
    # the same data as a form is another request (content type and raw body are compared)
    form = api.post(FINDINGS, FINDING, HTTP_IDEMPOTENCY_KEY=KEY)
    assert_error(form, 422, "Idempotency-Key")
    assert counts() == before


@pytest.mark.parametrize("key", ["", "x" * 256, "cl\u00e9", "tab\there", "nul\x00", "line\nbreak"])
def test_an_invalid_key_is_a_400_naming_the_header(api, key):
    before = counts()
    assert_error(keyed(api, FINDINGS, FINDING, key=key), 400, "Idempotency-Key")
    assert counts() == before
    assert not IdempotencyRecord.objects.exists()


def test_the_longest_valid_key_is_accepted(api):
    key = "".join(chr(32 + i % 95) for i in range(255))
    first = keyed(api, FINDINGS, FINDING, key=key)
    assert first.status_code == 201, first.content
    assert_replay_of(keyed(api, FINDINGS, FINDING, key=key), first)


def test_anonymous_keyed_posts_are_refused_as_without_a_key(anon):
    response = keyed(anon, FINDINGS, FINDING)
    assert response.status_code in (401, 403)
    assert not Finding.objects.exists()
    assert not IdempotencyRecord.objects.exists()


# ---------------------------------------------------------------- users, expiry, failures


def test_keys_are_per_user_a_stranger_gets_a_fresh_execution(api, client_for, other_user):
    mine = keyed(api, FINDINGS, FINDING)
    assert mine.status_code == 201
    theirs = keyed(client_for(other_user), FINDINGS, FINDING)
    assert theirs.status_code == 201, theirs.content
    assert not theirs.has_header("Idempotent-Replayed")
    assert theirs.json()["id"] != mine.json()["id"]
    assert Finding.objects.count() == 2
    # and each replays its own
    assert keyed(client_for(other_user), FINDINGS, FINDING).json()["id"] == theirs.json()["id"]
    assert keyed(api, FINDINGS, FINDING).json()["id"] == mine.json()["id"]


def test_a_stranger_cannot_replay_someone_elses_response(api, client_for, other_user, finding):
    url = f"{FINDINGS}{finding.pk}/claims/"
    body = {"metric": "risk", "direction": "decrease"}
    assert keyed(api, url, body).status_code == 201
    # the author's 201 is not the stranger's: the stranger's request runs and is refused
    response = keyed(client_for(other_user), url, body)
    assert_error(response, 403)
    assert not response.has_header("Idempotent-Replayed")


def test_an_expired_key_can_be_used_again(api, settings):
    first = keyed(api, FINDINGS, FINDING)
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_S + 1))
    again = keyed(api, FINDINGS, FINDING)
    assert again.status_code == 201 and not again.has_header("Idempotent-Replayed")
    assert again.json()["id"] != first.json()["id"]
    assert IdempotencyRecord.objects.count() == 1


def test_the_maintenance_task_purges_expired_keys(api, settings):
    settings.IDEMPOTENCY_KEY_TTL_S = 60
    keyed(api, FINDINGS, FINDING, key="old")
    keyed(api, FINDINGS, {**FINDING, "title": "Newer"}, key="new")
    IdempotencyRecord.objects.filter(key="old").update(created_at=timezone.now() - timedelta(seconds=61))
    from worker.tasks import idempotency_purge

    assert idempotency_purge() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


def test_a_5xx_is_not_stored_and_the_key_can_be_retried(api):
    with mock.patch.object(finding_services, "finding_create", side_effect=OperationalError("connection lost")):
        failed = keyed(api, FINDINGS, FINDING)
    assert failed.status_code == 503, failed.content
    assert not IdempotencyRecord.objects.exists()
    retried = keyed(api, FINDINGS, FINDING)
    assert retried.status_code == 201, retried.content
    assert not retried.has_header("Idempotent-Replayed")
    assert Finding.objects.count() == 1


def test_an_abandoned_reservation_is_taken_over(api, user, settings):
    """A reservation whose process died (never completed) blocks its key only for
    IDEMPOTENCY_IN_PROGRESS_TIMEOUT_S."""
    record = IdempotencyRecord.objects.create(user=user, key=KEY, request_hash="0" * 64, method="POST",
                                              path=FINDINGS)
    assert_error(keyed(api, FINDINGS, FINDING), 422, "Idempotency-Key")  # another request: 422 first
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_IN_PROGRESS_TIMEOUT_S + 1)
    )
    assert keyed(api, FINDINGS, FINDING).status_code == 201


# ---------------------------------------------------------------- concurrency (real threads, PostgreSQL)


def _post_in_thread(user: Any, results: list, start: threading.Barrier | None = None) -> threading.Thread:
    def target() -> None:
        try:
            client = APIClient()
            client.force_authenticate(user)
            if start is not None:
                start.wait(timeout=30)
            results.append(keyed(client, FINDINGS, FINDING))
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_duplicate_while_the_first_runs_is_a_409_and_nothing_runs_twice(user, api):
    entered, proceed = threading.Event(), threading.Event()
    real_create = finding_services.finding_create

    def slow_create(**kwargs: Any) -> Finding:
        entered.set()
        assert proceed.wait(timeout=30)
        return real_create(**kwargs)

    results: list = []
    with mock.patch.object(finding_services, "finding_create", side_effect=slow_create):
        thread = _post_in_thread(user, results)
        try:
            assert entered.wait(timeout=30)
            duplicate = keyed(api, FINDINGS, FINDING)
            assert_error(duplicate, 409, "Idempotency-Key")
            assert duplicate["Retry-After"]
        finally:
            proceed.set()
            thread.join(timeout=60)
    [first] = results
    assert first.status_code == 201, first.content
    assert Finding.objects.count() == 1
    assert_replay_of(keyed(api, FINDINGS, FINDING), first)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_posts_with_one_key_create_once(user):
    for round_ in range(5):
        results: list = []
        start = threading.Barrier(2)
        key_user = user
        threads = [_post_in_thread(key_user, results, start) for _ in range(2)]
        for thread in threads:
            thread.join(timeout=60)
        assert len(results) == 2
        fresh = [r for r in results if r.status_code == 201 and not r.has_header("Idempotent-Replayed")]
        others = [r for r in results if r not in fresh]
        assert len(fresh) == 1, [(r.status_code, r.content[:200]) for r in results]
        [other] = others
        assert other.status_code == 409 or (other.status_code == 201 and other["Idempotent-Replayed"] == "true"), (
            other.status_code, other.content[:200])
        assert Finding.objects.count() == round_ + 1
        IdempotencyRecord.objects.all().delete()  # the next round races on the same key afresh
