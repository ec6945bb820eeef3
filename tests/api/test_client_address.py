"""Who the client is (registry.api.throttling.client_address, API_NUM_PROXIES): X-Forwarded-For is
ignored without trusted proxies (a client can write anything there), and behind N proxies its N-th
entry from the right is the client. One rule for the anonymous throttle, the sign-in lockout
(django-axes) and the event stream's per-client cap."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
from axes.helpers import get_client_ip_address
from django.conf import settings
from django.core.cache import caches
from django.test import Client, RequestFactory, override_settings
from rest_framework.test import APIClient

from registry.api.throttling import AnonRateThrottle, client_address
from registry.events import stream

pytestmark = pytest.mark.django_db

PROXY = "10.9.8.7"


@contextmanager
def proxies(n: int) -> Iterator[None]:
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "NUM_PROXIES": n}):
        yield


@pytest.fixture
def two_per_minute(monkeypatch) -> Iterator[list[str]]:
    """Anonymous rate 2/minute; the test lists the identities it used, their counts are removed."""
    monkeypatch.setattr(AnonRateThrottle, "rate", "2/minute", raising=False)
    idents: list[str] = []
    yield idents
    for ident in idents:
        caches["default"].delete(AnonRateThrottle.cache_format % {"scope": "anon", "ident": ident})


def test_the_default_trusts_no_proxy():
    assert settings.REST_FRAMEWORK["NUM_PROXIES"] == 0
    assert settings.AXES_CLIENT_IP_CALLABLE == "registry.api.throttling.client_address"


def test_client_address_by_the_number_of_trusted_proxies():
    request = RequestFactory().get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="1.1.1.1, 2.2.2.2 ,3.3.3.3")
    bare = RequestFactory().get("/", REMOTE_ADDR=PROXY)
    with proxies(0):
        assert client_address(request) == PROXY
        assert get_client_ip_address(request) == PROXY  # django-axes: the same rule
    with proxies(1):
        assert client_address(request) == "3.3.3.3"
        assert get_client_ip_address(request) == "3.3.3.3"
        assert client_address(bare) == PROXY
    with proxies(2):
        assert client_address(request) == "2.2.2.2"
    with proxies(5):
        assert client_address(request) == "1.1.1.1"  # fewer entries than proxies: the leftmost


def test_a_made_up_x_forwarded_for_does_not_escape_the_anonymous_throttle(two_per_minute):
    two_per_minute.append("203.0.113.77")
    anon = APIClient(REMOTE_ADDR="203.0.113.77")
    codes = [anon.get("/api/v1/findings/", HTTP_X_FORWARDED_FOR=f"198.18.0.{n}").status_code for n in range(4)]
    assert codes == [200, 200, 429, 429]


def test_behind_one_proxy_the_last_forwarded_entry_is_the_client(two_per_minute):
    two_per_minute.extend(["198.51.100.9", "198.51.100.10", PROXY])
    anon = APIClient(REMOTE_ADDR=PROXY)
    with proxies(1):
        codes = [
            anon.get("/api/v1/findings/", HTTP_X_FORWARDED_FOR=f"198.18.0.{n}, 198.51.100.9").status_code
            for n in range(3)
        ]
        assert codes == [200, 200, 429]  # the forged left part changes nothing
        other = anon.get("/api/v1/findings/", HTTP_X_FORWARDED_FOR="198.18.0.1, 198.51.100.10")
        assert other.status_code == 200  # another client behind the same proxy


def _sign_in_fails(client: Client, xff: str) -> int:
    return client.post(
        "/accounts/login/", {"username": "alice", "password": "wrong"}, HTTP_X_FORWARDED_FOR=xff
    ).status_code


def test_the_sign_in_lockout_uses_the_same_rule(django_user_model):
    django_user_model.objects.create_user("alice", password="the right password")
    client = Client(REMOTE_ADDR=PROXY)
    with proxies(1):
        statuses = [_sign_in_fails(client, "198.51.100.20") for _ in range(settings.AXES_FAILURE_LIMIT)]
        assert statuses[-1] == 429
        # another client behind the same proxy is not locked out
        response = client.post("/accounts/login/", {"username": "alice", "password": "the right password"},
                               HTTP_X_FORWARDED_FOR="198.51.100.21")
        assert response.status_code == 302
    with proxies(0):  # no trusted proxy: a made-up X-Forwarded-For does not make a new client
        django_user_model.objects.create_user("bob", password="pw")
        other = Client(REMOTE_ADDR="203.0.113.5")
        for n in range(settings.AXES_FAILURE_LIMIT):
            other.post("/accounts/login/", {"username": "bob", "password": "no"}, HTTP_X_FORWARDED_FOR=f"1.2.3.{n}")
        response = other.post("/accounts/login/", {"username": "bob", "password": "pw"},
                              HTTP_X_FORWARDED_FOR="9.9.9.9")
        assert response.status_code == 429


@pytest.mark.parametrize(("n", "expected"), [(0, PROXY), (1, "198.51.100.30")])
def test_the_event_streams_per_client_cap_counts_the_same_client(n, expected):
    seen: list[str] = []

    def acquire(client: str):
        seen.append(client)
        raise stream.StreamLimitExceeded("client", 1)

    with proxies(n), mock.patch("registry.api.events_views.stream.acquire", side_effect=acquire):
        response = Client(REMOTE_ADDR=PROXY).get(
            "/api/v1/events/stream", HTTP_X_FORWARDED_FOR="198.18.0.1, 198.51.100.30"
        )
    assert response.status_code == 429
    assert seen == [f"addr:{expected}"]
