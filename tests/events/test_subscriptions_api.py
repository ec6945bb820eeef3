"""Subscription CRUD: validation, owner isolation, secret shown once, delivery log."""

import base64

import pytest

from registry.events.models import Delivery, Subscription
from registry.events.services import EVENT_TYPES
from tests.events.helpers import emit, finding

pytestmark = pytest.mark.django_db

URL = "/api/v1/subscriptions/"


def test_create_webhook_shows_the_secret_once(api, user):
    response = api.post(
        URL, {"name": "all runs", "url": "https://example.org/hook", "event_types": ["run.finished"]}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["channel"] == "webhook" and body["secret"].startswith("whsec_")
    assert len(base64.b64decode(body["secret"].removeprefix("whsec_"))) >= 24
    assert body["finding"] is None and body["event_types"] == ["run.finished"]
    assert Subscription.objects.get(pk=body["id"]).secret == body["secret"]
    assert Subscription.objects.get(pk=body["id"]).owner == user
    again = api.get(f"{URL}{body['id']}/").json()
    assert "secret" not in again and again["url"] == "https://example.org/hook"
    listed = api.get(URL).json()
    assert "secret" not in str(listed)


def test_feed_subscription_needs_no_url(api):
    response = api.post(URL, {"name": "feed", "channel": "feed", "tag": "sae"}, format="json")
    assert response.status_code == 201, response.json()
    assert "secret" not in response.json() and response.json()["url"] == ""


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "x"}, "url"),
        ({"name": "x", "url": "ftp://example.org/"}, "url"),
        ({"name": "x", "url": "not a url"}, "url"),
        ({"name": "x", "url": "https:///nohost"}, "url"),
        ({"name": "x", "url": "https://e.org/", "tag": "a", "plugin": "echo"}, "plugin"),
        ({"name": "x", "url": "https://e.org/", "event_types": ["run.exploded"]}, "event_types"),
        ({"name": "x", "url": "https://e.org/", "event_types": "run.finished"}, "event_types"),
        ({"name": "x", "url": "https://e.org/", "channel": "pigeon"}, "channel"),
        ({"url": "https://e.org/"}, "name"),
        ({"name": "x", "url": "https://e.org/", "finding": 999999}, "finding"),
    ],
)
def test_validation_errors_name_the_field(api, data, field):
    response = api.post(URL, data, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"], response.json()
    assert response.json()["detail"]
    assert not Subscription.objects.exists()


def test_finding_and_tag_together_rejected(api, user):
    mine = finding(created_by=user)
    response = api.post(URL, {"name": "x", "url": "https://e.org/", "finding": mine.pk, "tag": "t"}, format="json")
    assert response.status_code == 400 and "tag" in response.json()["errors"]


def test_cannot_subscribe_to_a_finding_one_cannot_see(api, user, other_user):
    hidden = finding(created_by=other_user, restricted_to=[])
    response = api.post(URL, {"name": "x", "url": "https://e.org/", "finding": hidden.pk}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"]["finding"] == [f"no finding {hidden.pk}"]
    shared = finding(created_by=other_user, restricted_to=[user])
    response = api.post(URL, {"name": "x", "url": "https://e.org/", "finding": shared.pk}, format="json")
    assert response.status_code == 201, response.json()


def test_all_known_event_types_accepted(api):
    response = api.post(URL, {"name": "x", "url": "http://e.org/", "event_types": list(EVENT_TYPES)}, format="json")
    assert response.status_code == 201
    assert response.json()["event_types"] == list(EVENT_TYPES)


def test_owner_isolation(api, client_for, other_user, anon):
    created = api.post(URL, {"name": "mine", "url": "https://e.org/"}, format="json").json()
    other = client_for(other_user)
    assert other.get(URL).json()["results"] == []
    assert other.get(f"{URL}{created['id']}/").status_code == 404
    assert other.patch(f"{URL}{created['id']}/", {"name": "stolen"}, format="json").status_code == 404
    assert other.delete(f"{URL}{created['id']}/").status_code == 404
    assert other.get(f"{URL}{created['id']}/deliveries/").status_code == 404
    assert anon.get(URL).status_code in (401, 403)
    assert anon.post(URL, {"name": "x", "url": "https://e.org/"}, format="json").status_code in (401, 403)
    assert Subscription.objects.get(pk=created["id"]).name == "mine"


def test_update_and_delete(api):
    created = api.post(URL, {"name": "mine", "channel": "feed"}, format="json").json()
    response = api.patch(f"{URL}{created['id']}/", {"active": False, "plugin": "echo"}, format="json")
    assert response.status_code == 200 and response.json()["active"] is False
    assert response.json()["plugin"] == "echo"
    # becoming a webhook needs a url, and then gets a secret (shown in that response)
    bad = api.patch(f"{URL}{created['id']}/", {"channel": "webhook"}, format="json")
    assert bad.status_code == 400 and "url" in bad.json()["errors"]
    good = api.patch(f"{URL}{created['id']}/", {"channel": "webhook", "url": "https://e.org/h"}, format="json")
    assert good.status_code == 200 and good.json()["secret"].startswith("whsec_")
    bad = api.patch(f"{URL}{created['id']}/", {"tag": "x"}, format="json")
    assert bad.status_code == 400 and "plugin" in bad.json()["errors"]
    assert api.delete(f"{URL}{created['id']}/").status_code == 204
    assert not Subscription.objects.exists()


def test_delivery_log(api, user):
    created = api.post(URL, {"name": "mine", "url": "https://e.org/"}, format="json").json()
    event = emit("finding.created", finding(created_by=user))
    Delivery.objects.create(subscription_id=created["id"], event=event, attempts=2, last_status_code=500)
    body = api.get(f"{URL}{created['id']}/deliveries/").json()
    assert body["count"] == 1
    row = body["results"][0]
    assert row["event"] == event.pk and row["event_type"] == "finding.created"
    assert row["status"] == "pending" and row["attempts"] == 2 and row["last_status_code"] == 500
    assert api.get(f"{URL}{created['id']}/deliveries/?status=delivered").json()["count"] == 0
    assert api.get(f"{URL}{created['id']}/deliveries/?status=bogus").status_code == 400


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/hook", "http://localhost/hook", "http://10.1.2.3/x", "http://169.254.169.254/latest"]
)
def test_webhooks_to_private_addresses_are_refused(api, url, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False
    response = api.post("/api/v1/subscriptions/", {"name": "x", "channel": "webhook", "url": url}, format="json")
    assert response.status_code == 400, response.json()
    assert "url" in response.json()["errors"]
