"""The commit-ordered cursor under concurrency (PostgreSQL): writers commit out of id order, and every
reader (events_after, /api/v1/events/, the SSE stream, the webhook sweep) delivers every committed
event exactly once, in cursor order, skipping none. Against the former id-only cursor this fails:
writer A's event is allocated a lower id, B's commits first and the readers move past A's."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection, transaction
from rest_framework.test import APIClient

from registry.api.events_views import event_stream
from registry.events.cursor import events_after
from registry.events.models import Delivery, Event, Subscription
from registry.events.services import event_emit, webhooks_sweep

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WRITERS = 8
TRANSACTIONS_PER_WRITER = 12


class _Rollback(Exception):
    pass


def _thread(target, errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()  # each thread has its own connection

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_out_of_order_commits_reach_every_reader_once_in_order(user):
    subscription = Subscription.objects.create(
        owner=user, name="everything", channel=Subscription.Channel.WEBHOOK, url="http://127.0.0.1:9/hook",
        secret="s", after_event_id=0,
    )
    errors: list[BaseException] = []
    writing = threading.Event()  # set while writers may still commit
    writing.set()
    seen: dict[str, list[int]] = {"cursor": [], "api": [], "stream": [], "sweep": []}

    # --- readers, each polling with its own cursor throughout ------------------------------------
    def cursor_reader() -> None:
        after = 0
        while True:
            last_round = not writing.is_set()
            while batch := events_after(after, limit=7):
                seen["cursor"] += [e.id for e in batch]
                after = batch[-1].id
            if last_round:
                return
            time.sleep(0.002)

    def api_reader() -> None:
        client, after = APIClient(), 0
        while True:
            last_round = not writing.is_set()
            while True:
                body = client.get("/api/v1/events/", {"after": after, "limit": 5}).json()
                seen["api"] += [e["id"] for e in body["events"]]
                if not body["events"]:
                    assert body["next"] == after
                    break
                after = body["next"]
            if last_round:
                return
            time.sleep(0.002)

    def stream_reader() -> None:
        stream = event_stream(user=AnonymousUser(), after=0, timeout_s=120, poll_s=0.002, keepalive_s=0.02)
        idle_after_writers = 0
        try:
            for chunk in stream:
                for block in chunk.decode().split("\n\n"):
                    data = [line for line in block.split("\n") if line.startswith("data: ")]
                    if data:
                        seen["stream"].append(json.loads(data[0].removeprefix("data: "))["id"])
                if not writing.is_set() and chunk == b": keep-alive\n\n":
                    idle_after_writers += 1
                    if idle_after_writers >= 3:  # the log is quiet and every writer has finished
                        return
        finally:
            stream.close()

    def sweep_reader() -> None:
        while True:
            last_round = not writing.is_set()
            webhooks_sweep(send=False)
            if last_round:
                return
            time.sleep(0.002)

    readers = [_thread(r, errors) for r in (cursor_reader, api_reader, stream_reader, sweep_reader)]

    # --- the canonical interleaving: A inserts, B inserts and commits, readers poll, A commits ---
    a_inserted, b_committed = threading.Event(), threading.Event()

    def writer_a() -> None:
        with transaction.atomic():
            event_emit(type="finding.updated", payload={"writer": "A"})
            a_inserted.set()
            assert b_committed.wait(10)
            time.sleep(0.3)  # every reader polls at least once while B's higher id is visible
        # A commits here, below B's id

    def writer_b() -> None:
        assert a_inserted.wait(10)
        with transaction.atomic():
            event_emit(type="finding.updated", payload={"writer": "B"})
        b_committed.set()

    pair = [_thread(writer_a, errors), _thread(writer_b, errors)]
    for thread in pair:
        thread.join(30)

    # --- many writers committing out of order, some rolling back ---------------------------------
    def writer(seed: int) -> None:
        rng = random.Random(seed)
        for n in range(TRANSACTIONS_PER_WRITER):
            try:
                with transaction.atomic():
                    for k in range(rng.randint(1, 3)):
                        event_emit(type="finding.updated", payload={"writer": seed, "n": n, "k": k})
                        time.sleep(rng.random() * 0.01)
                    if rng.random() < 0.15:
                        raise _Rollback
            except _Rollback:
                pass

    writers = [_thread(lambda s=s: writer(s), errors) for s in range(WRITERS)]
    for thread in writers:
        thread.join(60)
    # Readers take their last round only once every committed event is settled: a transaction of
    # another client of the PostgreSQL server (any database) holds the horizon back while it runs.
    total = Event.objects.count()
    deadline = time.monotonic() + 60
    while len(events_after(0, limit=100_000)) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    writing.clear()
    for thread in readers:
        thread.join(60)
    assert not any(t.is_alive() for t in pair + writers + readers)
    assert not errors, errors

    committed = list(Event.objects.order_by("txid", "id").values_list("id", flat=True))
    a = Event.objects.get(payload__writer="A")
    b = Event.objects.get(payload__writer="B")
    assert a.id < b.id  # A's id was allocated first and committed last
    assert len(committed) > 2 * WRITERS
    for name in ("cursor", "api", "stream"):
        assert seen[name] == committed, name  # every event, once, in cursor order
    delivered = sorted(Delivery.objects.filter(subscription=subscription).values_list("event_id", flat=True))
    assert delivered == sorted(committed)  # the sweep matched every event (once: unique per event)


def test_a_subscription_made_while_an_older_event_is_uncommitted_still_receives_it(user):
    from registry.events.services import subscription_create

    errors: list[BaseException] = []
    inserted, release = threading.Event(), threading.Event()

    def writer_a() -> None:
        with transaction.atomic():
            event_emit(type="finding.updated", payload={"n": "A"})  # the lower id
            inserted.set()
            assert release.wait(10)

    thread = _thread(writer_a, errors)
    assert inserted.wait(10)
    with transaction.atomic():
        event_emit(type="finding.updated", payload={"n": "B"})  # a higher id, committed first
    subscription, _ = subscription_create(
        owner=user, name="from now", channel=Subscription.Channel.WEBHOOK, url="http://127.0.0.1:9/hook"
    )
    release.set()
    thread.join(10)
    assert not errors
    deadline = time.monotonic() + 60  # another client's transaction may hold the horizon back
    while len(events_after(0, limit=10)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    webhooks_sweep(send=False)
    delivered = sorted(d.event.payload["n"] for d in Delivery.objects.filter(subscription=subscription))
    # B was not settled while A ran, so the subscription starts before both; an id-only start
    # (the highest id, B's) would have dropped A for good.
    assert delivered == ["A", "B"]
