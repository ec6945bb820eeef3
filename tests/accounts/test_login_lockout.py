"""Sign-in lockout (django-axes) with the real settings: AXES_FAILURE_LIMIT wrong passwords for one
username from one address lock that pair out for the cool-off; other addresses and users go on."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
PASSWORD = "the right password"


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password=PASSWORD, is_staff=True)


def sign_in(client: Client, password: str, username: str = "alice", url: str = LOGIN, **extra):
    return client.post(url, {"username": username, "password": password}, **extra)


def fail_until_locked(client: Client, url: str = LOGIN, **extra) -> list[int]:
    return [sign_in(client, f"wrong {n}", url=url, **extra).status_code for n in range(settings.AXES_FAILURE_LIMIT)]


def test_the_settings_are_the_documented_ones():
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 15 * 60
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]


def test_lockout_after_the_failure_limit_is_a_clear_html_page(alice):
    client = Client()
    statuses = fail_until_locked(client)
    assert statuses[:-1] == [200] * (settings.AXES_FAILURE_LIMIT - 1)  # the form again, with its error
    assert statuses[-1] == 429
    response = sign_in(client, PASSWORD)  # even the right password is refused now
    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/html")
    assert int(response["Retry-After"]) == 15 * 60
    page = response.content.decode()
    assert "Sign-in temporarily locked" in page and "15 minutes" in page
    assert "_auth_user_id" not in client.session


def test_other_addresses_and_other_users_are_not_locked_out(alice, django_user_model):
    django_user_model.objects.create_user("bob", password=PASSWORD)
    fail_until_locked(Client())
    elsewhere = Client()
    assert sign_in(elsewhere, PASSWORD, REMOTE_ADDR="10.1.2.3").status_code == 302
    assert sign_in(Client(), PASSWORD, username="bob").status_code == 302  # same address, other user


def test_the_cool_off_ends_the_lockout(alice):
    client = Client()
    fail_until_locked(client)
    assert sign_in(client, PASSWORD).status_code == 429
    # move the failures back past the cool-off
    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time -= settings.AXES_COOLOFF_TIME
        attempt.save(update_fields=["attempt_time"])
    response = sign_in(client, PASSWORD)
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_a_success_resets_the_count(alice):
    client = Client()
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(client, f"wrong {n}").status_code == 200
    assert sign_in(client, PASSWORD).status_code == 302
    client.logout()
    assert sign_in(client, "wrong again").status_code == 200  # counting starts anew


def test_the_admin_login_locks_out_too(alice):
    client = Client()
    statuses = fail_until_locked(client, url=ADMIN_LOGIN)
    assert statuses[-1] == 429
    assert sign_in(client, PASSWORD, url=ADMIN_LOGIN).status_code == 429
    # the admin and the dashboard share one count for the pair
    assert sign_in(client, PASSWORD).status_code == 429


@pytest.mark.parametrize("limit", [2])
def test_an_explicit_override_of_the_limit(alice, settings, limit):
    settings.AXES_FAILURE_LIMIT = limit
    client = Client()
    assert [sign_in(client, f"wrong {n}").status_code for n in range(limit)] == [200] * (limit - 1) + [429]
