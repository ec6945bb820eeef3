"""The event log through /api/v1/events/: cursor paging, transactional writes, visibility."""

from __future__ import annotations

import pytest

from registry.events.models import Event
from registry.reproductions import services as repro_services
from registry.reproductions.models import Experiment
from tests.api.helpers import FINDINGS, assert_error, counts
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/events/"


def test_events_after_a_cursor_in_id_order(anon, make_finding):
    first = make_finding(title="First")
    cursor = Event.objects.latest("id").id
    second = make_finding(title="Second")
    third = make_finding(title="Third")
    body = anon.get(EVENTS, {"after": cursor}).json()
    assert [(e["type"], e["finding"]) for e in body["events"]] == [
        ("finding.created", second.pk), ("finding.created", third.pk)
    ]
    ids = [e["id"] for e in body["events"]]
    assert ids == sorted(ids) and all(i > cursor for i in ids)
    assert body["next"] == ids[-1]
    assert body["events"][0]["payload"]["title"] == "Second"
    assert {"id", "type", "finding", "plugin", "payload", "created_at"} <= set(body["events"][0])
    # nothing new: the cursor stays
    assert anon.get(EVENTS, {"after": body["next"]}).json() == {"events": [], "next": body["next"]}
    assert first.pk in [e["finding"] for e in anon.get(EVENTS).json()["events"]]


def test_paging_with_limit_visits_every_event_once(anon, make_finding):
    start = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
    created = [make_finding(title=f"F{i}").pk for i in range(5)]
    seen, cursor = [], start
    for _ in range(10):
        body = anon.get(EVENTS, {"after": cursor, "limit": 2}).json()
        assert len(body["events"]) <= 2
        if not body["events"]:
            break
        seen += [e["finding"] for e in body["events"]]
        cursor = body["next"]
    assert seen == created


def test_type_and_finding_filters(anon, finding, make_finding, make_experiment):
    make_experiment(finding)
    make_finding(title="Unrelated")
    types = [e["type"] for e in anon.get(EVENTS, {"finding": finding.pk}).json()["events"]]
    assert types == ["finding.created", "experiment.created", "reproduction.requested"]
    body = anon.get(EVENTS, {"type": "experiment.created,reproduction.requested"}).json()
    assert [e["type"] for e in body["events"]] == ["experiment.created", "reproduction.requested"]
    assert body["events"][0]["plugin"] == "echo"


def test_finding_create_writes_its_event(api):
    before = Event.objects.count()
    finding_id = api.post(FINDINGS, {"title": "Evented", "kind": "fix"}, format="json").json()["id"]
    events = list(Event.objects.order_by("id"))[before:]
    assert [(e.type, e.finding_id) for e in events] == [("finding.created", finding_id)]


def test_failed_experiment_create_leaves_no_event(api, finding, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("broker exploded while fanning out")

    monkeypatch.setattr(repro_services, "reproduction_request", broken)
    before = counts()
    with pytest.raises(RuntimeError):
        repro_services.experiment_create(finding=finding, user=finding.created_by, plugin="echo")
    assert counts() == before
    assert not Event.objects.filter(type="experiment.created").exists()
    assert not Experiment.objects.exists()


def test_refused_writes_leave_no_event(api, client_for, other_user, finding):
    before = counts()
    title = finding.title
    refused = client_for(other_user).patch(f"{FINDINGS}{finding.pk}/", {"title": "x"}, format="json")
    assert refused.status_code == 403, refused.content  # a public finding a stranger may not edit
    assert_error(api.post(f"{FINDINGS}{finding.pk}/experiments/", {"plugin": "echo", "params": {"bogus": 1}},
                          format="json"), 400, "params")
    assert_error(api.post(f"{FINDINGS}{finding.pk}/claims/", {"metric": "nope", "direction": "increase"},
                          format="json"), 400, "metric")
    assert_error(api.patch(f"{FINDINGS}{finding.pk}/", {"builds_on": [finding.pk]}, format="json"), 400, "builds_on")
    assert counts() == before
    finding.refresh_from_db()
    assert finding.title == title


def test_restricted_finding_events_are_hidden_from_others(client_for, anon, make_finding, make_experiment,
                                                          other_user):
    secret = make_finding(owner=other_user, title="Secret", visibility="restricted")
    make_experiment(secret, owner=other_user)
    public = make_finding(title="Public")
    stranger = client_for(UserFactory())
    for client in (anon, stranger):
        findings = {e["finding"] for e in client.get(EVENTS).json()["events"]}
        assert secret.pk not in findings and public.pk in findings
        assert client.get(EVENTS, {"finding": secret.pk}).json()["events"] == []
    own = {e["finding"] for e in client_for(other_user).get(EVENTS).json()["events"]}
    assert secret.pk in own


def test_the_cursor_moves_past_hidden_events(anon, make_finding, make_experiment, other_user):
    """A page holding only hidden events must still advance the cursor, or a reader loops forever."""
    start = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
    secret = make_finding(owner=other_user, title="Secret", visibility="restricted")
    for _ in range(6):
        make_experiment(secret, owner=other_user, default_seeds=1)  # 2 hidden events each: 13 in all
    public = make_finding(title="Public")
    cursor, seen = start, []
    for _ in range(20):
        body = anon.get(EVENTS, {"after": cursor, "limit": 1}).json()
        seen += [e["finding"] for e in body["events"]]
        if body["next"] == cursor:
            break
        assert body["next"] > cursor
        cursor = body["next"]
    assert seen == [public.pk]
    assert cursor == Event.objects.latest("id").id


def test_bad_cursor_is_a_400(anon):
    assert_error(anon.get(EVENTS, {"after": "yesterday"}), 400, "after")
    assert_error(anon.get(EVENTS, {"after": "0x10"}), 400, "after")


@pytest.mark.parametrize("who", ["anonymous", "stranger"])
def test_hidden_finding_answers_like_an_absent_one(who, client_for, user, other_user):
    from tests.events.helpers import emit, finding

    client = client_for(None if who == "anonymous" else other_user)
    public = finding(created_by=user)
    hidden = finding(created_by=user, restricted_to=[])
    emit("finding.created", public)
    start = Event.objects.latest("id").id
    emit("finding.created", hidden)
    emit("run.finished", hidden, plugin="echo")
    emit("finding.updated", hidden)
    absent = hidden.pk + 1000
    for after in (0, start):
        by_hidden = client.get(EVENTS, {"finding": hidden.pk, "after": after})
        by_absent = client.get(EVENTS, {"finding": absent, "after": after})
        assert by_hidden.status_code == by_absent.status_code == 200
        assert by_hidden.json() == by_absent.json() == {"events": [], "next": after}
        # a type filter neither lists nor counts the hidden finding's events
        typed = client.get(EVENTS, {"type": "run.finished,finding.updated", "after": after}).json()
        assert typed == {"events": [], "next": after}
    # the unfiltered log past the public event: the hidden events do not move the cursor either
    assert client.get(EVENTS, {"after": start}).json() == {"events": [], "next": start}
    # the owner sees them all
    owner = client_for(user).get(EVENTS, {"finding": hidden.pk}).json()
    assert [e["type"] for e in owner["events"]] == ["finding.created", "run.finished", "finding.updated"]
