"""Idempotency-Key and secrets: an answer carrying a secret (a new API token, a webhook's signing
secret) is never stored in clear, and a replay does not hand it out again; a path the middleware
cannot store (NUL) is a 400, an unknown path passes through."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import models
from rest_framework.test import APIClient

from registry.accounts.models import ApiToken
from registry.events import webhooks
from registry.events.models import Subscription
from registry.idempotency.middleware import SECRET_WITHHELD_HEADER
from registry.idempotency.models import IdempotencyRecord

pytestmark = pytest.mark.django_db

HOOK = {"name": "hook", "channel": "webhook", "url": "https://example.org/hook"}


@pytest.fixture(autouse=True)
def _example_org_resolves(monkeypatch) -> None:
    """The sandbox has no DNS (a webhook URL whose host does not resolve is refused)."""
    monkeypatch.setattr(webhooks, "_resolve", lambda hostname, port: ["93.184.215.14"])


def keyed(client: APIClient, url: str, body: Any, key: str) -> Any:
    return client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def stored_text() -> str:
    """Every column of every IdempotencyRecord, as text (the body's bytes decoded)."""
    parts: list[str] = []
    for record in IdempotencyRecord.objects.all():
        for field in IdempotencyRecord._meta.concrete_fields:
            value = getattr(record, field.attname)
            if isinstance(field, models.BinaryField) and value is not None:
                value = bytes(value).decode("utf-8", "replace")
            parts.append(str(value))
    return "\n".join(parts)


def test_a_keyed_token_create_stores_no_secret_and_a_replay_after_revoke_gives_none(api, user):
    first = keyed(api, "/api/v1/tokens/", {"name": "ci"}, "tok-1")
    assert first.status_code == 201, first.content
    secret = first.json()["token"]
    assert secret and not first.has_header(SECRET_WITHHELD_HEADER)  # the first answer has it
    assert IdempotencyRecord.objects.filter(key="tok-1").exists()
    assert secret not in stored_text()
    assert secret[12:] not in stored_text()  # not even the part after the prefix

    token = ApiToken.objects.get(user=user)
    assert api.delete(f"/api/v1/tokens/{token.pk}/").status_code == 204
    replay = keyed(api, "/api/v1/tokens/", {"name": "ci"}, "tok-1")
    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert replay[SECRET_WITHHELD_HEADER] == "token"
    body = replay.json()
    assert body["token"] is None and body["id"] == first.json()["id"]
    assert secret.encode() not in replay.content
    assert ApiToken.objects.filter(user=user).count() == 1  # not created twice
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    assert stranger.get("/api/v1/me/quota/").status_code == 401  # revoked: the secret is dead


def test_a_keyed_webhook_subscription_create_stores_no_secret(api):
    first = keyed(api, "/api/v1/subscriptions/", HOOK, "sub-1")
    assert first.status_code == 201, first.content
    secret = first.json()["secret"]
    assert secret.startswith("whsec_")
    assert "whsec_" not in stored_text()
    replay = keyed(api, "/api/v1/subscriptions/", HOOK, "sub-1")
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert replay[SECRET_WITHHELD_HEADER] == "secret"
    assert replay.json()["secret"] is None
    assert replay.json()["id"] == first.json()["id"]
    assert Subscription.objects.count() == 1


def test_a_keyed_rotate_secret_stores_no_secret(api):
    created = api.post("/api/v1/subscriptions/", HOOK, format="json")
    assert created.status_code == 201, created.content
    url = f"/api/v1/subscriptions/{created.json()['id']}/rotate-secret/"
    first = keyed(api, url, {}, "rot-1")
    assert first.status_code == 200, first.content
    secret = first.json()["secret"]
    assert secret.startswith("whsec_") and secret != created.json()["secret"]
    assert "whsec_" not in stored_text()
    replay = keyed(api, url, {}, "rot-1")
    assert replay.status_code == 200 and replay["Idempotent-Replayed"] == "true"
    assert replay[SECRET_WITHHELD_HEADER] == "secret"
    assert replay.json()["secret"] is None
    assert replay.json()["previous_secret_expires_at"] == first.json()["previous_secret_expires_at"]
    subscription = Subscription.objects.get()
    assert secret.encode() not in replay.content
    assert subscription.secret == secret  # rotated once, not twice


def test_a_feed_subscription_without_a_secret_is_replayed_unchanged(api):
    body = {"name": "follow", "channel": "feed"}
    first = keyed(api, "/api/v1/subscriptions/", body, "feed-1")
    replay = keyed(api, "/api/v1/subscriptions/", body, "feed-1")
    assert replay.content == first.content
    assert not replay.has_header(SECRET_WITHHELD_HEADER)


@pytest.mark.parametrize("path", ["/api/v1/findings/%00/", "/api/v1/findings/1/authors/%00/accept"])
def test_a_keyed_post_to_a_path_with_nul_is_a_400_not_a_500(api, path):
    response = api.post(path, {}, format="json", HTTP_IDEMPOTENCY_KEY="nul-1")
    assert response.status_code == 400, response.content
    assert "path" in response.json()["errors"]
    assert not IdempotencyRecord.objects.exists()


def test_a_keyed_post_to_an_unknown_path_passes_through_to_a_404(api):
    response = api.post("/api/v1/nothing-here/", {}, format="json", HTTP_IDEMPOTENCY_KEY="unknown-1")
    assert response.status_code == 404
    assert not IdempotencyRecord.objects.exists()
