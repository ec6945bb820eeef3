"""The hidden-versus-absent matrix: for every surface that takes a finding (or one of its claims or
experiments) by id, a finding the caller may not read answers exactly like an id that never existed:
same status code, same body (the id itself aside), same cursor (``next``). Anonymous callers and
signed-in strangers alike. This is the one place that proves it for all surfaces together."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from registry.events.models import Event, Subscription
from registry.findings.models import Claim, Finding
from registry.findings.services import finding_create
from registry.reproductions.models import Experiment
from tests.events.helpers import emit
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/events/"
FEED = "/api/v1/events/feed.atom"
FINDINGS = "/api/v1/findings/"


@dataclass
class World:
    author: object
    reader: object
    hidden: Finding
    hidden_claim: Claim
    hidden_experiment: Experiment
    public: Finding
    start: int  # the last public event: a cursor position in the middle of the log
    absent: int  # a finding id that never existed
    absent_claim: int
    absent_experiment: int


@pytest.fixture
def world(db) -> World:
    author, reader = UserFactory(), UserFactory()
    public = finding_create(user=author, title="A public finding", kind=Finding.Kind.THEORY)
    hidden = finding_create(
        user=author, title="Embargoed dual-use result", kind=Finding.Kind.FIX,
        visibility=Finding.Visibility.RESTRICTED, restricted_to=[reader],
    )
    hidden_claim = Claim.objects.create(
        finding=hidden, metric="risk", direction="decrease", min_relative_effect=0.5, created_by=author
    )
    hidden_experiment = Experiment.objects.create(finding=hidden, plugin="echo", params={}, created_by=author)
    emit("finding.updated", public)
    start = Event.objects.latest("id").id
    emit("run.started", hidden, plugin="echo", run=1)
    emit("run.finished", hidden, plugin="echo", run=1, state="succeeded")
    emit("finding.verdict_changed", hidden, verdict="confirmed")
    return World(
        author=author, reader=reader, hidden=hidden, hidden_claim=hidden_claim, hidden_experiment=hidden_experiment,
        public=public, start=start, absent=hidden.pk + 100_000, absent_claim=hidden_claim.pk + 100_000,
        absent_experiment=hidden_experiment.pk + 100_000,
    )


def _finding_surfaces(world: World, me) -> dict:
    """Surfaces taking a finding id: name -> callable(client, finding id) -> response."""

    def subscription_patch(client, fid):
        if me is None:  # anonymous: nothing of theirs to patch, the same 401/403 either way
            return client.patch("/api/v1/subscriptions/1/", {"finding": fid}, format="json")
        mine = Subscription.objects.create(owner=me, name="mine", channel="feed")
        return client.patch(f"/api/v1/subscriptions/{mine.pk}/", {"finding": fid}, format="json")

    return {
        "events ?finding": lambda c, fid: c.get(EVENTS, {"finding": fid}),
        "events ?finding&after=start": lambda c, fid: c.get(EVENTS, {"finding": fid, "after": world.start}),
        "events ?finding&type=run.finished": lambda c, fid: c.get(EVENTS, {"finding": fid, "type": "run.finished"}),
        "events ?finding&type&after&limit": lambda c, fid: c.get(
            EVENTS, {"finding": fid, "type": "run.started,run.finished", "after": world.start, "limit": 1}
        ),
        "atom feed ?finding": lambda c, fid: c.get(FEED, {"finding": fid}),
        "POST subscriptions webhook finding": lambda c, fid: c.post(
            "/api/v1/subscriptions/",
            {"name": "follow", "channel": "webhook", "url": "https://example.org/hook", "finding": fid},
            format="json",
        ),
        "POST subscriptions feed finding": lambda c, fid: c.post(
            "/api/v1/subscriptions/", {"name": "follow", "channel": "feed", "finding": fid}, format="json"
        ),
        "PATCH subscription finding": subscription_patch,
        "findings ?builds_on": lambda c, fid: c.get(FINDINGS, {"builds_on": fid}),
        "experiments ?finding": lambda c, fid: c.get("/api/v1/experiments/", {"finding": fid}),
        "POST findings builds_on": lambda c, fid: c.post(
            FINDINGS, {"title": "Follow-up", "kind": "theory", "builds_on": [fid]}, format="json"
        ),
        "finding detail": lambda c, fid: c.get(f"{FINDINGS}{fid}/"),
        "finding effects": lambda c, fid: c.get(f"{FINDINGS}{fid}/effects/"),
        "finding lineage": lambda c, fid: c.get(f"{FINDINGS}{fid}/lineage/"),
        "finding rollup": lambda c, fid: c.get(f"{FINDINGS}{fid}/rollup/"),
        "finding claims": lambda c, fid: c.get(f"{FINDINGS}{fid}/claims/"),
        "finding experiments": lambda c, fid: c.get(f"{FINDINGS}{fid}/experiments/"),
        "POST finding claims": lambda c, fid: c.post(
            f"{FINDINGS}{fid}/claims/", {"metric": "risk", "direction": "decrease"}, format="json"
        ),
        "POST finding experiments": lambda c, fid: c.post(
            f"{FINDINGS}{fid}/experiments/", {"plugin": "echo", "reproduce": False}, format="json"
        ),
        "POST finding rereproduce": lambda c, fid: c.post(f"{FINDINGS}{fid}/rereproduce/"),
        "PATCH finding": lambda c, fid: c.patch(f"{FINDINGS}{fid}/", {"title": "x"}, format="json"),
        "DELETE finding": lambda c, fid: c.delete(f"{FINDINGS}{fid}/"),
    }


def _comparable(response, the_id: int) -> tuple[int, str]:
    """Status and body; an error message may name the id asked for, and an empty feed's <updated>
    is the time of the request: both are replaced."""
    body = response.content.decode()
    if response.status_code >= 400:
        body = re.sub(rf"\b{the_id}\b", "ID", body)
    if response.get("Content-Type", "").startswith("application/atom+xml"):
        body = re.sub(r"<updated>[^<]*</updated>", "<updated/>", body)
    return response.status_code, body


@pytest.fixture(params=["anonymous", "stranger"])
def caller(request, client_for):
    me = None if request.param == "anonymous" else UserFactory()
    client = client_for(me)
    if me is not None:
        client.force_login(me)  # the Atom feed is a plain Django view: it reads the session only
    return me, client


def test_every_finding_surface_answers_a_hidden_finding_like_an_absent_one(world, caller):
    me, client = caller
    differing = {}
    for name, ask in _finding_surfaces(world, me).items():
        hidden = _comparable(ask(client, world.hidden.pk), world.hidden.pk)
        absent = _comparable(ask(client, world.absent), world.absent)
        if hidden != absent:
            differing[name] = {"hidden": hidden, "absent": absent}
    assert differing == {}
    # nothing was created by the refused writes
    assert not Subscription.objects.filter(finding=world.hidden).exists()
    assert Finding.objects.count() == 2
    assert world.hidden.claims.count() == 1 and world.hidden.experiments.count() == 1
    assert Finding.objects.get(pk=world.hidden.pk).title == "Embargoed dual-use result"


def test_the_cursor_fields_agree_and_do_not_move(world, caller):
    _, client = caller
    for after in (0, world.start):
        for query in ({}, {"type": "run.finished"}, {"type": "run.started,finding.verdict_changed", "limit": 1}):
            by_hidden = client.get(EVENTS, {"finding": world.hidden.pk, "after": after, **query})
            by_absent = client.get(EVENTS, {"finding": world.absent, "after": after, **query})
            assert by_hidden.status_code == by_absent.status_code == 200
            assert by_hidden.json() == by_absent.json() == {"events": [], "next": after}
    # the unfiltered log: the hidden finding's events neither appear nor move the cursor
    assert client.get(EVENTS, {"after": world.start}).json() == {"events": [], "next": world.start}


def test_claim_and_experiment_ids_of_a_hidden_finding_answer_like_absent_ones(world, caller, client_for):
    me, client = caller
    mine = finding_create(user=me or world.author, title="My own finding", kind=Finding.Kind.THEORY)
    surfaces = {
        "claim detail": ("claim", lambda cid: client.get(f"/api/v1/claims/{cid}/")),
        "PATCH claim": ("claim", lambda cid: client.patch(f"/api/v1/claims/{cid}/", {"statement": "x"},
                                                          format="json")),
        "claim create supersedes": ("claim", lambda cid: client.post(
            f"{FINDINGS}{mine.pk}/claims/", {"metric": "risk", "direction": "decrease", "supersedes": cid},
            format="json",
        )),
        "experiment detail": ("experiment", lambda eid: client.get(f"/api/v1/experiments/{eid}/")),
        "experiment reproductions": ("experiment", lambda eid: client.get(f"/api/v1/experiments/{eid}/reproductions/")),
        "POST experiment reproductions": ("experiment", lambda eid: client.post(
            f"/api/v1/experiments/{eid}/reproductions/", {"n_seeds": 1}, format="json"
        )),
        "reproductions ?experiment": ("experiment", lambda eid: client.get(
            "/api/v1/reproductions/", {"experiment": eid}
        )),
    }
    ids = {
        "claim": (world.hidden_claim.pk, world.absent_claim),
        "experiment": (world.hidden_experiment.pk, world.absent_experiment),
    }
    differing = {}
    for name, (kind, ask) in surfaces.items():
        hidden_id, absent_id = ids[kind]
        hidden, absent = _comparable(ask(hidden_id), hidden_id), _comparable(ask(absent_id), absent_id)
        if hidden != absent:
            differing[name] = {"hidden": hidden, "absent": absent}
    assert differing == {}
    assert Claim.objects.get(pk=world.hidden_claim.pk).is_current is True
    assert world.hidden_experiment.reproductions.count() == 0


def test_the_matrix_is_not_vacuous_the_reader_sees_the_hidden_finding(world, client_for):
    """The same requests by someone the finding is restricted to answer differently from the absent
    id: the matrix above compares a real, populated finding, not two empty ones."""
    reader = client_for(world.reader)
    reader.force_login(world.reader)  # for the Atom feed (session only)
    assert reader.get(f"{FINDINGS}{world.hidden.pk}/").status_code == 200
    assert reader.get(f"{FINDINGS}{world.absent}/").status_code == 404
    assert reader.get(f"{FINDINGS}{world.hidden.pk}/effects/").status_code == 200
    events = reader.get(EVENTS, {"finding": world.hidden.pk, "after": world.start}).json()
    assert [e["type"] for e in events["events"]] == ["run.started", "run.finished", "finding.verdict_changed"]
    assert events["next"] > world.start
    typed = reader.get(EVENTS, {"finding": world.hidden.pk, "type": "run.finished"}).json()["events"]
    assert [e["type"] for e in typed] == ["run.finished"]
    feed = reader.get(FEED, {"finding": world.hidden.pk}).content.decode()
    assert feed.count("<entry>") == 4 and "Embargoed dual-use result" in feed  # with finding.created
    created = reader.post(
        "/api/v1/subscriptions/",
        {"name": "follow", "channel": "webhook", "url": "https://example.org/hook", "finding": world.hidden.pk},
        format="json",
    )
    assert created.status_code == 201 and created.json()["secret"].startswith("whsec_")
    follow_up = reader.post(FINDINGS, {"title": "Follow-up", "kind": "theory", "builds_on": [world.hidden.pk]},
                            format="json")
    assert follow_up.status_code == 201, follow_up.json()
    children = reader.get(FINDINGS, {"builds_on": world.hidden.pk}).json()["results"]
    assert [f["id"] for f in children] == [follow_up.json()["id"]]
    assert reader.get(f"/api/v1/claims/{world.hidden_claim.pk}/").status_code == 200
    assert reader.get(f"/api/v1/experiments/{world.hidden_experiment.pk}/").status_code == 200


def test_restricted_to_names_users_not_findings(world, client_for):
    """``restricted_to`` with an unknown username is a 400 naming it, with an existing one a 201:
    usernames are public (authors are listed on every finding), so this reveals no hidden finding;
    the answer is the same whether or not the named user can read hidden findings."""
    client = client_for(UserFactory())
    unknown = client.post(FINDINGS, {"title": "x", "kind": "fix", "visibility": "restricted",
                                     "restricted_to": ["nobody-by-this-name"]}, format="json")
    assert unknown.status_code == 400 and "restricted_to" in unknown.json()["errors"]
    for name in (world.reader.username, UserFactory().username):
        made = client.post(FINDINGS, {"title": "x", "kind": "fix", "visibility": "restricted",
                                      "restricted_to": [name]}, format="json")
        assert made.status_code == 201 and made.json()["restricted_to"] == [name]
