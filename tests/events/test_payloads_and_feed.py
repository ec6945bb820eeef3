"""Webhook payloads a receiver can act on, Atom entries people can read, and finding.deleted
reaching exactly those who could see the finding (issue 8, item 6)."""

import json
import xml.etree.ElementTree as ET

import pytest
from django.test import override_settings

from registry.events.models import Delivery, Event
from registry.events.services import subscription_create, webhooks_sweep
from registry.findings.services import finding_delete
from registry.reproductions.models import Experiment, Measurement, Reproduction, Run
from tests.events.helpers import emit, finding, webhook_receiver

pytestmark = pytest.mark.django_db

ATOM = "{http://www.w3.org/2005/Atom}"
BASE = "https://registry.example.org"
NASTY = 'Probe <script>alert("x")</script> & friends'


def _bodies(receiver) -> list[dict]:
    return [json.loads(r.body) for r in receiver.requests]


def _run(target, user) -> Run:
    experiment = Experiment.objects.create(finding=target, plugin="echo", created_by=user)
    reproduction = Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=[0])
    run = Run.objects.create(reproduction=reproduction, seed=0, state=Run.State.SUCCEEDED)
    Measurement.objects.create(run=run, arm="treatment", metric="acc", value=0.75)
    Measurement.objects.create(run=run, arm="control", metric="acc", value=0.5, censored=True)
    return run


# --- Webhook payloads ----------------------------------------------------------------------------

@override_settings(REGISTRY_BASE_URL=BASE)
def test_run_finished_payload_carries_title_links_and_measurements(user):
    target = finding(created_by=user, title=NASTY)
    run = _run(target, user)
    with webhook_receiver() as receiver:
        subscription_create(owner=user, name="hook", url=receiver.url)
        emit("run.finished", target, plugin="echo", run=run.pk, state="succeeded", measurements=2)
        assert webhooks_sweep()["delivered"] == 1
    (body,) = _bodies(receiver)
    assert body["finding_title"] == NASTY
    assert body["title"] == f"Run {run.pk} of “{NASTY}” finished (succeeded)"
    assert body["links"] == {
        "finding": f"{BASE}/api/v1/findings/{target.pk}/",
        "finding_page": f"{BASE}/findings/{target.pk}/",
        "run": f"{BASE}/api/v1/runs/{run.pk}/",
        "run_page": f"{BASE}/runs/{run.pk}/",
    }
    assert body["measurements"]["count"] == 2 and body["measurements"]["truncated"] is False
    assert {(m["arm"], m["metric"], m["value"], m["censored"]) for m in body["measurements"]["values"]} == {
        ("treatment", "acc", 0.75, False), ("control", "acc", 0.5, True),
    }
    assert "verdict" not in body


@override_settings(REGISTRY_BASE_URL=BASE)
def test_verdict_changed_payload_carries_the_verdict(user):
    target = finding(created_by=user)
    with webhook_receiver() as receiver:
        subscription_create(owner=user, name="hook", url=receiver.url)
        emit("finding.verdict_changed", target, claim=3, metric="acc", old=None, new="confirmed", evidence={})
        assert webhooks_sweep()["delivered"] == 1
    (body,) = _bodies(receiver)
    assert body["verdict"] == {"claim": 3, "metric": "acc", "old": None, "new": "confirmed"}
    assert body["links"] == {
        "finding": f"{BASE}/api/v1/findings/{target.pk}/", "finding_page": f"{BASE}/findings/{target.pk}/",
    }
    assert "run" not in body["links"] and "measurements" not in body
    assert body["title"].startswith("Verdict on acc of “") and body["title"].endswith("none → confirmed")


def test_payload_of_a_finding_hidden_before_sending_is_never_sent(user, other_user):
    """Enqueued while visible, hidden before the send: nothing of it (title, links) goes out."""
    target = finding(created_by=other_user, title="secret-title")
    with webhook_receiver() as receiver:
        sub, _ = subscription_create(owner=user, name="hook", url=receiver.url)
        emit("finding.updated", target)
        assert webhooks_sweep(send=False)["enqueued"] == 1
        target.visibility = "restricted"
        target.save()
        webhooks_sweep()
    assert receiver.requests == []
    assert Delivery.objects.get(subscription=sub).status == "failed"


# --- Atom entries --------------------------------------------------------------------------------

def _feed(client, query: str = "") -> tuple[bytes, list[ET.Element]]:
    response = client.get(f"/api/v1/events/feed.atom{query}")
    assert response.status_code == 200, response.content
    return response.content, ET.fromstring(response.content).findall(f"{ATOM}entry")


def test_atom_entries_are_readable_and_escaped(anon, user):
    target = finding(created_by=user, title=NASTY, tags=("sae",))
    run = _run(target, user)
    event = emit("run.finished", target, plugin="echo", run=run.pk, state="succeeded", measurements=2)
    raw, entries = _feed(anon)
    assert b"<script>" not in raw  # escaped, never markup
    (entry,) = entries
    assert entry.find(f"{ATOM}title").text == f"Run {run.pk} of “{NASTY}” finished (succeeded)"
    summary = entry.find(f"{ATOM}summary")
    assert summary.get("type") == "html"
    html = summary.text  # HTML once the XML is read: the title is escaped in it again
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; friends" in html
    assert "<script>" not in html
    assert "2 measurements: control.acc = ≥ 0.5, treatment.acc = 0.75" in html
    assert entry.find(f"{ATOM}link").get("href").endswith(f"/findings/{target.pk}/")
    assert entry.find(f"{ATOM}updated").text.startswith(str(event.created_at.year))
    # the filters still apply
    assert len(_feed(anon, f"?finding={target.pk}")[1]) == 1
    assert len(_feed(anon, "?tag=sae")[1]) == 1
    assert len(_feed(anon, "?plugin=echo")[1]) == 1
    assert _feed(anon, "?plugin=other")[1] == []


@pytest.mark.parametrize("who", ["anonymous", "stranger"])
def test_atom_shows_nothing_of_a_hidden_finding(who, client_for, user, other_user):
    hidden = finding(created_by=other_user, restricted_to=[], title="hidden-title")
    emit("finding.created", hidden)
    client = client_for(None)
    if who == "stranger":
        client.force_login(user)
    raw, entries = _feed(client)
    assert entries == [] and b"hidden-title" not in raw
    assert _feed(client, f"?finding={hidden.pk}")[1] == []



def test_atom_reads_an_api_token_like_the_rest_of_the_api(anon, user, other_user):
    from registry.accounts.services import token_create

    restricted = finding(created_by=other_user, restricted_to=[user], title="for-the-reader")
    emit("finding.created", restricted)
    secret = token_create(user=user, name="feed reader")[1]
    response = anon.get(f"/api/v1/events/feed.atom?finding={restricted.pk}", HTTP_AUTHORIZATION=f"Token {secret}")
    assert response.status_code == 200
    assert b"for-the-reader" in response.content
    assert _feed(anon, f"?finding={restricted.pk}")[1] == []  # no token: nothing of it
    bad = anon.get("/api/v1/events/feed.atom", HTTP_AUTHORIZATION="Token not-a-token")
    assert bad.status_code == 401 and "detail" in bad.json()

# --- finding.deleted reaches those who could see it ----------------------------------------------

def _deleted_events(subscription) -> list[Event]:
    return [d.event for d in Delivery.objects.filter(subscription=subscription, event__type="finding.deleted")]


def test_public_finding_deleted_reaches_every_subscriber(user, other_user):
    target = finding(created_by=other_user, tags=("sae",), title="to be deleted")
    with webhook_receiver() as receiver:
        everything, _ = subscription_create(owner=user, name="all", url=receiver.url)
        by_tag, _ = subscription_create(owner=user, name="tag", url=receiver.url, tag="sae")
        finding_delete(finding=target, user=other_user)
        result = webhooks_sweep()
        assert result["enqueued"] == 2 and result["delivered"] == 2, result
    bodies = _bodies(receiver)
    assert {b["type"] for b in bodies} == {"finding.deleted"}
    assert all(b["finding_title"] == "to be deleted" and b["links"] == {} for b in bodies)
    assert all(b["title"] == "Finding “to be deleted” was deleted" for b in bodies)
    assert len(_deleted_events(everything)) == 1 and len(_deleted_events(by_tag)) == 1


def test_restricted_finding_deleted_reaches_its_readers_only(user, other_user, staff_user):
    from tests.factories import UserFactory

    stranger = UserFactory()
    target = finding(created_by=other_user, restricted_to=[user], title="restricted")
    subs = {
        who: subscription_create(owner=owner, name=who, url="http://127.0.0.1:9/never")[0]
        for who, owner in (("author", other_user), ("reader", user), ("staff", staff_user), ("stranger", stranger))
    }
    finding_delete(finding=target, user=other_user)
    webhooks_sweep(send=False)
    assert {who for who, s in subs.items() if _deleted_events(s)} == {"author", "reader", "staff"}


def test_deleted_finding_events_through_the_api(client_for, anon, user, other_user):
    public = finding(created_by=other_user)
    restricted = finding(created_by=other_user, restricted_to=[user])
    public_id, restricted_id = public.pk, restricted.pk
    emit("finding.updated", restricted)
    finding_delete(finding=public, user=other_user)
    finding_delete(finding=restricted, user=other_user)
    from tests.factories import UserFactory

    stranger = client_for(UserFactory())
    reader = client_for(user)
    for client, expected in ((anon, {public_id}), (stranger, {public_id}), (reader, {public_id, restricted_id})):
        response = client.get("/api/v1/events/?type=finding.deleted")
        assert response.status_code == 200, response.content
        assert {e["finding"] for e in response.json()["events"]} == expected
    # the reader still sees the deleted finding's earlier events; a stranger sees none of them
    assert [e["type"] for e in reader.get(f"/api/v1/events/?finding={restricted_id}").json()["events"]] == [
        "finding.updated", "finding.deleted",
    ]
    # a hidden deleted finding answers like an absent one, anonymous and stranger alike
    for client in (anon, stranger):
        hidden = client.get(f"/api/v1/events/?finding={restricted_id}")
        absent = client.get("/api/v1/events/?finding=999999")
        assert hidden.status_code == absent.status_code == 200
        assert hidden.json() == absent.json() == {"events": [], "next": 0}
    hidden = anon.get(f"/api/v1/events/?finding={restricted_id}")
    absent = anon.get("/api/v1/events/?finding=999999")
    assert hidden.status_code == absent.status_code == 200
    assert hidden.json() == absent.json()
