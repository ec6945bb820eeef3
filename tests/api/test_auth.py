"""Token authentication, with the token printed by ``manage.py create_api_user``."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from registry.findings.models import Finding
from tests.api.helpers import FINDINGS, assert_error, counts

pytestmark = pytest.mark.django_db


def create_api_user(*args: str) -> str:
    out, err = StringIO(), StringIO()
    call_command("create_api_user", *args, stdout=out, stderr=err)
    return out.getvalue().strip()


def test_token_from_create_api_user_authenticates():
    token = create_api_user("alice")
    assert re.fullmatch(r"ifr_[A-Za-z0-9_-]{43}", token), token
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.post(FINDINGS, {"title": "By token", "kind": "fix"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["authors"] == ["alice"]
    assert Finding.objects.get(pk=response.json()["id"]).created_by.username == "alice"
    # running it again reuses the user and prints a new token; the first one keeps working
    second = create_api_user("alice")
    assert second != token
    assert get_user_model().objects.filter(username="alice").count() == 1
    for secret in (token, second):
        client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
        assert client.get("/api/v1/tokens/").status_code == 200


def test_staff_flag():
    create_api_user("bob", "--staff")
    assert get_user_model().objects.get(username="bob").is_staff


def test_bad_token_is_401_json(finding):
    before = counts()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert_error(client.post(FINDINGS, {"title": "x", "kind": "fix"}, format="json"), 401)
    assert_error(client.get(FINDINGS), 401)
    client.credentials(HTTP_AUTHORIZATION="Token")
    assert_error(client.get(FINDINGS), 401)
    client.credentials(HTTP_AUTHORIZATION="Token a b")
    assert_error(client.get(FINDINGS), 401)
    assert counts() == before


def test_no_credentials_write_is_401_with_challenge():
    response = APIClient().post(FINDINGS, {"title": "x", "kind": "fix"}, format="json")
    assert_error(response, 401)
    assert response["WWW-Authenticate"].startswith("Token")


def test_inactive_user_token_is_refused():
    token = create_api_user("carol")
    get_user_model().objects.filter(username="carol").update(is_active=False)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert_error(client.post(FINDINGS, {"title": "x", "kind": "fix"}, format="json"), 401)



