"""Hashed, named, expiring API tokens: the API, the dashboard page, create_api_user, the migration."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from registry.accounts.models import ApiToken
from registry.accounts.services import hash_secret, token_create
from tests.api.helpers import FINDINGS, assert_error

pytestmark = pytest.mark.django_db

TOKENS = "/api/v1/tokens/"


def bearer(secret: str, keyword: str = "Token") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {secret}")
    return client


def whoami(client: APIClient) -> int:
    """The status of an authenticated-only request (the caller's token list)."""
    return client.get(TOKENS).status_code


# --- at rest -------------------------------------------------------------------------------------


def test_the_database_never_holds_a_usable_key(user):
    token, secret = token_create(user=user, name="laptop")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apitoken WHERE id = %s", [token.pk])
        row = [value for value in cursor.fetchone() if isinstance(value, str)]
    assert secret not in row
    assert hash_secret(secret) in row and token.prefix in row
    assert len(token.prefix) < len(secret) // 2
    assert whoami(bearer(secret)) == 200
    for stored in row:  # nothing read from the row works as a token
        assert_error(bearer(stored).get(TOKENS), 401)
    assert token.key_hash == hashlib.sha256(secret.encode()).hexdigest()


def test_token_and_bearer_keywords_both_work(user):
    _, secret = token_create(user=user, name="ci")
    assert whoami(bearer(secret, "Token")) == 200
    assert whoami(bearer(secret, "Bearer")) == 200
    assert whoami(bearer(secret, "bearer")) == 200


def test_a_wrong_secret_with_a_right_prefix_is_refused(user):
    _, secret = token_create(user=user, name="ci")
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert_error(bearer(forged).get(TOKENS), 401)


# --- expiry, revocation, last use ----------------------------------------------------------------


def test_expired_token_is_401_json(user):
    token, secret = token_create(user=user, name="short", expires_in_days=1)
    assert whoami(bearer(secret)) == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    body = assert_error(bearer(secret).post(FINDINGS, {"title": "x", "kind": "fix"}, format="json"), 401)
    assert "expired" in body["detail"].lower()


def test_expires_at_and_expires_in_days(user, api):
    at = (timezone.now() + timedelta(days=3)).replace(microsecond=0)
    body = api.post(TOKENS, {"name": "until", "expires_at": at.isoformat()}, format="json").json()
    assert body["expires_at"] == at.isoformat().replace("+00:00", "Z")
    body = api.post(TOKENS, {"name": "days", "expires_in_days": 30}, format="json").json()
    expires = ApiToken.objects.get(pk=body["id"]).expires_at
    assert abs(expires - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    assert_error(api.post(TOKENS, {"name": "past", "expires_at": "2000-01-01T00:00:00Z"}, format="json"), 400)
    assert_error(api.post(TOKENS, {"name": "zero", "expires_in_days": 0}, format="json"), 400, "expires_in_days")
    assert_error(
        api.post(TOKENS, {"name": "both", "expires_in_days": 3, "expires_at": at.isoformat()}, format="json"), 400
    )
    assert_error(api.post(TOKENS, {"expires_in_days": 3}, format="json"), 400, "name")


def test_revoked_token_stops_working_at_once(user):
    token, secret = token_create(user=user, name="old")
    _, other_secret = token_create(user=user, name="new")
    client = bearer(other_secret)
    assert client.delete(f"{TOKENS}{token.pk}/").status_code == 204
    body = assert_error(bearer(secret).get(TOKENS), 401)
    assert "revoked" in body["detail"].lower()
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert_error(client.delete(f"{TOKENS}{token.pk}/"), 404)  # already revoked
    assert [t["name"] for t in client.get(TOKENS).json()] == ["new"]
    assert whoami(client) == 200  # the user's other token is untouched


def test_a_token_can_revoke_itself(user):
    token, secret = token_create(user=user, name="self")
    assert bearer(secret).delete(f"{TOKENS}{token.pk}/").status_code == 204
    assert_error(bearer(secret).get(TOKENS), 401)


def test_last_used_at_is_written_at_most_once_a_minute(user):
    token, secret = token_create(user=user, name="ci")
    assert token.last_used_at is None
    assert whoami(bearer(secret)) == 200
    first = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first is not None and timezone.now() - first < timedelta(seconds=30)
    assert whoami(bearer(secret)) == 200
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first  # within the minute: no write
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    assert whoami(bearer(secret)) == 200
    assert ApiToken.objects.get(pk=token.pk).last_used_at > first - timedelta(seconds=1)


def test_inactive_users_tokens_are_refused(user):
    _, secret = token_create(user=user, name="ci")
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    assert_error(bearer(secret).get(TOKENS), 401)


# --- the API -------------------------------------------------------------------------------------


def test_create_shows_the_secret_once_and_the_list_never(api, user):
    response = api.post(TOKENS, {"name": "laptop"}, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    secret = created["token"]
    assert secret.startswith(created["prefix"]) and created["name"] == "laptop"
    assert created["expires_at"] is None and created["last_used_at"] is None
    assert whoami(bearer(secret)) == 200
    listing = api.get(TOKENS)
    assert listing.status_code == 200
    assert secret not in listing.content.decode()
    assert hash_secret(secret) not in listing.content.decode()
    (item,) = listing.json()
    assert set(item) == {"id", "name", "prefix", "created_at", "expires_at", "expired", "last_used_at"}
    detail = api.get(f"{TOKENS}{created['id']}/")
    assert detail.status_code == 200 and "token" not in detail.json()


def test_several_named_tokens_per_user(api, user):
    for name in ("laptop", "ci", "notebook"):
        assert api.post(TOKENS, {"name": name}, format="json").status_code == 201
    assert sorted(t["name"] for t in api.get(TOKENS).json()) == ["ci", "laptop", "notebook"]


def test_strangers_get_404_for_anothers_token(user, other_user, client_for):
    token, secret = token_create(user=user, name="mine")
    stranger = client_for(other_user)
    assert_error(stranger.get(f"{TOKENS}{token.pk}/"), 404)
    assert_error(stranger.delete(f"{TOKENS}{token.pk}/"), 404)
    assert stranger.get(TOKENS).json() == []
    _, stranger_secret = token_create(user=other_user, name="theirs")
    assert_error(bearer(stranger_secret).delete(f"{TOKENS}{token.pk}/"), 404)
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None
    assert whoami(bearer(secret)) == 200


def test_anonymous_gets_401(user, anon):
    token, _ = token_create(user=user, name="mine")
    assert_error(anon.get(TOKENS), 401)
    assert_error(anon.post(TOKENS, {"name": "x"}, format="json"), 401)
    assert_error(anon.get(f"{TOKENS}{token.pk}/"), 401)
    assert_error(anon.delete(f"{TOKENS}{token.pk}/"), 401)
    assert ApiToken.objects.count() == 1


def test_session_can_create_a_token_with_csrf(user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    assert_error(client.post(TOKENS, {"name": "x"}, format="json"), 403)  # no CSRF token
    assert ApiToken.objects.count() == 0


# --- create_api_user -----------------------------------------------------------------------------


def create_api_user(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("create_api_user", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_create_api_user_prints_a_new_working_token_each_time():
    first, _ = create_api_user("dora")
    second, _ = create_api_user("dora", "--name", "ci", "--expires-in-days", "7")
    assert first != second and "\n" not in first
    assert whoami(bearer(first)) == 200 and whoami(bearer(second)) == 200
    dora = get_user_model().objects.get(username="dora")
    tokens = ApiToken.objects.filter(user=dora)
    assert tokens.count() == 2
    assert tokens.get(name="ci").expires_at is not None
    assert not tokens.filter(key_hash__in=[first, second]).exists()


def test_create_api_user_sets_a_password_for_the_dashboard():
    _, err = create_api_user("erin", "--password", "a long enough password")
    assert "password set" in err
    client = Client()
    response = client.post("/accounts/login/", {"username": "erin", "password": "a long enough password"})
    assert response.status_code == 302
    assert client.get("/accounts/profile/").status_code == 200


# --- the dashboard page --------------------------------------------------------------------------


def test_dashboard_tokens_page_needs_a_signed_in_user(client):
    response = client.get("/accounts/tokens/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_dashboard_lists_creates_and_revokes(user, other_user):
    client = Client()
    client.force_login(user)
    header = client.get("/").content.decode()
    assert 'href="/accounts/profile/"' in header  # the profile page holds the tokens
    token_create(user=other_user, name="not-mine")
    response = client.post("/accounts/tokens/", {"name": "from the page", "expires_in_days": "30"})
    assert response.status_code == 201
    page = response.content.decode()
    (secret,) = re.findall(r'id="token-secret">([^<]+)<', page)
    assert whoami(bearer(secret)) == 200
    token = ApiToken.objects.get(user=user)
    assert token.name == "from the page" and token.expires_at is not None
    listing = client.get("/accounts/profile/")
    text = listing.content.decode()
    assert "from the page" in text and token.prefix in text
    assert secret not in text and "not-mine" not in text
    assert "no-cache" in listing["Cache-Control"] or "no-store" in listing["Cache-Control"]
    # revoke: someone else's token is not touched
    stranger_token = ApiToken.objects.get(user=other_user)
    client.post(f"/accounts/tokens/{stranger_token.pk}/revoke/")
    assert ApiToken.objects.get(pk=stranger_token.pk).revoked_at is None
    response = client.post(f"/accounts/tokens/{token.pk}/revoke/", follow=True)
    assert "revoked" in response.content.decode()
    assert_error(bearer(secret).get(TOKENS), 401)


def test_dashboard_create_without_a_name_is_a_400(user):
    client = Client()
    client.force_login(user)
    assert client.post("/accounts/tokens/", {"name": ""}).status_code == 400
    assert not ApiToken.objects.exists()


# --- the migration of rest_framework.authtoken keys ----------------------------------------------


def test_old_authtoken_keys_are_hashed_and_keep_working(user):
    import importlib

    from django.apps import apps as global_apps

    migration = importlib.import_module("registry.accounts.migrations.0002_import_authtoken_keys")
    key = "0d461beb6e13f64108f0fc896d0561ca152a9058"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamp NOT NULL, user_id integer)"
        )
        cursor.execute(
            "INSERT INTO authtoken_token (key, created, user_id) VALUES (%s, %s, %s)", [key, timezone.now(), user.pk]
        )
    try:
        with connection.schema_editor() as editor:
            migration.forwards(global_apps, editor)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM authtoken_token")
            assert cursor.fetchone()[0] == 0  # the clear-text keys are gone
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE authtoken_token")
    token = ApiToken.objects.get(user=user)
    assert token.key_hash == hash_secret(key) and token.prefix == key[:12]
    assert whoami(bearer(key)) == 200
