"""The live stream (SSE) and the Atom feed: format, resume, visibility, filters."""

import json
import time
import xml.etree.ElementTree as ET

import pytest

from registry.api.events_views import event_stream
from tests.events.helpers import emit, finding

pytestmark = pytest.mark.django_db

ATOM = "{http://www.w3.org/2005/Atom}"


def _messages(raw: bytes) -> list[dict[str, str]]:
    messages = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        messages.append(fields)
    return messages


def _stream(client, query: str = "", **headers) -> tuple[object, list[dict[str, str]]]:
    response = client.get(f"/api/v1/events/stream?timeout=1{query}", **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response.streaming
    return response, _messages(b"".join(response.streaming_content))


def test_stream_format_visibility_and_resume(anon, user, other_user):
    public = finding(created_by=other_user)
    hidden = finding(created_by=other_user, restricted_to=[])
    e1 = emit("finding.created", public)
    e2 = emit("run.finished", public, plugin="echo", run=3)
    e3 = emit("finding.created", hidden)  # last and hidden: nothing of it reaches the stream

    started = time.monotonic()
    response, messages = _stream(anon, "&after=0")
    assert time.monotonic() - started < 5  # ?timeout closes the stream
    assert response["Cache-Control"] == "no-cache"
    assert messages[0] == {"retry": "3000"}
    events = [m for m in messages if "data" in m]
    assert [(m["id"], m["event"]) for m in events] == [(str(e1.pk), "finding.created"), (str(e2.pk), "run.finished")]
    data = json.loads(events[1]["data"])
    assert data == {
        "id": e2.pk, "type": "run.finished", "finding": public.pk, "plugin": "echo", "payload": {"run": 3},
        "created_at": e2.created_at.isoformat(),
    }
    assert all("data" in m for m in messages[1:])  # no bare `id:` line for a hidden event
    assert str(e3.pk) not in {m.get("id") for m in messages}
    assert hidden.pk not in {json.loads(m["data"])["finding"] for m in events}

    # resume with Last-Event-ID (header wins over ?after=)
    _, messages = _stream(anon, "&after=0", HTTP_LAST_EVENT_ID=str(e1.pk))
    assert [m["id"] for m in messages if "data" in m] == [str(e2.pk)]
    _, messages = _stream(anon, f"&after={e2.pk}")
    assert [m for m in messages if "data" in m] == []


def test_stream_shows_restricted_events_to_those_allowed(client_for, other_user):
    hidden = finding(created_by=other_user, restricted_to=[])
    event = emit("finding.created", hidden)
    _, messages = _stream(client_for(other_user), "&after=0")
    assert [m["id"] for m in messages if "data" in m] == [str(event.pk)]


def test_stream_rejects_bad_cursor(anon):
    response = anon.get("/api/v1/events/stream?after=abc&timeout=1")
    assert response.status_code == 400 and "after" in response.json()["errors"]
    response = anon.get("/api/v1/events/stream?timeout=soon")
    assert response.status_code == 400 and "timeout" in response.json()["errors"]


def test_stream_keepalive_and_new_events(anon, user):
    stream = event_stream(user=anon, after=0, timeout_s=0.5, poll_s=0.05, keepalive_s=0.1)
    assert next(stream) == b"retry: 3000\n\n"
    assert next(stream) == b": keep-alive\n\n"  # nothing happened yet
    event = emit("finding.created", finding(created_by=user))
    chunk = next(stream)
    while chunk == b": keep-alive\n\n":
        chunk = next(stream)
    assert chunk.startswith(f"id: {event.pk}\nevent: finding.created\ndata: ".encode())
    rest = list(stream)  # ends by itself at the timeout
    assert all(c == b": keep-alive\n\n" for c in rest)


def _feed(client, query: str = "") -> list[ET.Element]:
    response = client.get(f"/api/v1/events/feed.atom{query}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/atom+xml")
    root = ET.fromstring(response.content)
    assert root.tag == f"{ATOM}feed"
    return root.findall(f"{ATOM}entry")


def _ids(entries: list[ET.Element]) -> list[int]:
    return [int(e.find(f"{ATOM}id").text.rsplit(":", 1)[1]) for e in entries]


def test_atom_feed_entries_filters_and_visibility(anon, client_for, other_user):
    sae = finding(created_by=other_user, tags=("sae",))
    plain = finding(created_by=other_user)
    hidden = finding(created_by=other_user, restricted_to=[], tags=("sae",))
    e1 = emit("finding.created", sae)
    e2 = emit("run.finished", plain, plugin="echo")
    e3 = emit("finding.created", hidden)

    entries = _feed(anon)
    assert _ids(entries) == [e2.pk, e1.pk]  # newest first, the hidden one left out
    first = entries[0]
    assert first.find(f"{ATOM}title").text == f"A run of “{plain.title}” finished"  # no run id in the payload
    assert "Plugin: echo" in first.find(f"{ATOM}summary").text
    assert f"/findings/{plain.pk}/" in first.find(f"{ATOM}link").get("href")
    assert {c.get("term") for c in first.findall(f"{ATOM}category")} == {"run.finished", "echo"}

    assert _ids(_feed(anon, f"?finding={sae.pk}")) == [e1.pk]
    assert _ids(_feed(anon, "?tag=sae")) == [e1.pk]
    assert _ids(_feed(anon, "?plugin=echo")) == [e2.pk]
    assert _ids(_feed(anon, f"?finding={hidden.pk}")) == []
    author = client_for(other_user)
    author.force_login(other_user)  # the feed is a plain Django view: session authentication
    assert _ids(_feed(author, "?tag=sae")) == [e3.pk, e1.pk]


def test_atom_feed_is_limited_to_50(anon, user):
    target = finding(created_by=user)
    events = [emit("finding.updated", target, n=n) for n in range(55)]
    assert _ids(_feed(anon)) == [e.pk for e in reversed(events)][:50]


@pytest.mark.parametrize("value", ["x", "²", "-3", "0", "1.5", "9" * 30, "9" * 5000])
def test_atom_feed_bad_parameter(anon, value):
    response = anon.get("/api/v1/events/feed.atom", {"finding": value})
    assert response.status_code == 400 and "finding" in response.json()["errors"]


@pytest.mark.parametrize("who", ["anonymous", "stranger"])
def test_stream_shows_nothing_of_a_hidden_event(who, client_for, user, other_user):
    client = client_for(None if who == "anonymous" else other_user)
    hidden = finding(created_by=user, restricted_to=[])
    public = finding(created_by=user)
    before = emit("finding.created", public)
    secret_edit = emit("finding.updated", hidden, title="secret")
    _, messages = _stream(client, f"&after={before.pk}")
    assert messages == [{"retry": "3000"}]  # no bare `id:` line, no data: as if nothing happened
    after = emit("finding.updated", public)
    _, messages = _stream(client, f"&after={before.pk}")
    assert [m.get("id") for m in messages[1:]] == [str(after.pk)]
    assert str(secret_edit.pk) not in {m.get("id") for m in messages}


@pytest.mark.parametrize("who", ["anonymous", "stranger"])
def test_stream_starts_from_now_by_default(who, client_for, user, other_user):
    from registry.events.cursor import events_head

    client = client_for(None if who == "anonymous" else other_user)
    old = emit("finding.created", finding(created_by=user))
    assert events_head() == old.pk
    _, messages = _stream(client)  # no ?after=, no Last-Event-ID: live from now, no replay
    assert [m for m in messages if "data" in m] == []
    _, messages = _stream(client, "&after=0")  # an explicit cursor replays
    assert [m["id"] for m in messages if "data" in m] == [str(old.pk)]
    _, messages = _stream(client, HTTP_LAST_EVENT_ID="0")
    assert [m["id"] for m in messages if "data" in m] == [str(old.pk)]
    # live: an event written after the stream starts is delivered
    reader = _anon_or(who, other_user)
    stream = event_stream(user=reader, after=events_head(), timeout_s=0.5, poll_s=0.05, keepalive_s=0.1)
    assert next(stream) == b"retry: 3000\n\n"
    new = emit("finding.created", finding(created_by=user))
    chunks = b"".join(stream)
    assert f"id: {new.pk}\n".encode() in chunks and f"id: {old.pk}\n".encode() not in chunks


def _anon_or(who, other_user):
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser() if who == "anonymous" else other_user


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
@pytest.mark.parametrize("who", ["anonymous", "signed in"])
def test_stream_answers_other_methods_with_a_json_405_not_a_csrf_page(method, who, user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    if who == "signed in":
        client.force_login(user)
    response = getattr(client, method)("/api/v1/events/stream")
    assert response.status_code == 405, response.content[:200]
    assert response["Content-Type"].startswith("application/json")
    assert "GET" in response["Allow"] and "not allowed" in response.json()["detail"]


def test_stream_head_is_empty_and_immediate(anon):
    response = anon.head("/api/v1/events/stream?timeout=30")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    assert response.content == b""
