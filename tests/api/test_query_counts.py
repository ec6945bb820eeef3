"""A constant number of SQL queries per request whatever the page size (issue 11, reads at scale).

Each list endpoint is read at two sizes of the data behind it (2 items, then 10), with the related
rows that would cost a query each if they were not fetched in bulk (runs with measurements and
artifacts, reproductions with several runs, claims with verdicts, several authors, a requester per
reproduction, deliveries with attempts), and the number of queries must be the same at both sizes.
Readers: a signed-in author, a signed-in stranger and an anonymous client where the visibility
filters differ. The findings list and the landscape are counted in their own tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from registry.accounts.models import ApiToken
from registry.effects.models import ClaimVerdict
from registry.events.models import Delivery, DeliveryAttempt, Event, Subscription
from registry.findings.models import Claim, Finding, FindingAuthor
from registry.reproductions.models import (
    Artifact,
    Experiment,
    Measurement,
    MetricDefinition,
    Reproduction,
    Run,
    WorkerPresence,
)
from tests.factories import FindingFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SMALL, LARGE = 2, 10
READERS = ("author", "stranger", "anonymous")


# ---------------------------------------------------------------- counting


def queries(client: APIClient, url: str) -> tuple[int, list[str], object]:
    """The number of SQL queries one GET costs, the queries, and the response (a 200)."""
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.content[:500])
    return len(ctx.captured_queries), [q["sql"] for q in ctx.captured_queries], response


def assert_constant(client: APIClient, url: str, grow: Callable[[int], None], *, items: Callable | None = None) -> int:
    """Read ``url`` with SMALL items, grow the data to LARGE items, read again: the same number of
    queries. ``items(response)`` (optional) says how many items the response holds, to check that
    the larger read really returned more."""
    grow(SMALL)
    queries(client, url)  # warm-up: per-process caches (plugins, content types) filled once
    n_small, sql_small, response_small = queries(client, url)
    grow(LARGE - SMALL)
    n_large, sql_large, response_large = queries(client, url)
    print(f"query-count {url} {SMALL}:{n_small} {LARGE}:{n_large}")  # shown with -s
    if items is not None:
        assert items(response_small) == SMALL, items(response_small)
        assert items(response_large) == LARGE, items(response_large)
    assert n_small == n_large, (
        f"{url}: {n_small} queries with {SMALL} items, {n_large} with {LARGE}\n"
        + "\n".join(f"{i}: {sql}" for i, sql in enumerate(sql_large))
    )
    return n_large


def _count_list(response) -> int:
    body = response.json()
    return len(body["results"] if isinstance(body, dict) and "results" in body else body)


# ---------------------------------------------------------------- data


@pytest.fixture
def author(db):
    return UserFactory()


@pytest.fixture
def stranger(db):
    return UserFactory()


@pytest.fixture
def reader(request, author, stranger) -> APIClient:
    client = APIClient()
    who = getattr(request, "param", "author")
    if who == "author":
        client.force_authenticate(author)
    elif who == "stranger":
        client.force_authenticate(stranger)
    client.who = who
    return client


def public_finding(author, **fields) -> Finding:
    """A public finding with its author and a co-author (accepted) and an invited user."""
    finding = FindingFactory(created_by=author, authors=[UserFactory()], **fields)
    FindingAuthor.objects.create(finding=finding, user=UserFactory(), status=FindingAuthor.Status.INVITED)
    return finding


def restricted_finding(author) -> Finding:
    """A restricted finding of the author's: hidden from strangers, its rows never listed to them."""
    return FindingFactory(created_by=author, visibility=Finding.Visibility.RESTRICTED)


def experiment_on(finding: Finding) -> Experiment:
    return Experiment.objects.create(finding=finding, plugin="echo", params={}, created_by=finding.created_by)


def reproduction_on(experiment: Experiment, i: int, *, runs: int = 2) -> Reproduction:
    """A reproduction by its own requester; odd ones on the GPU with a queued run (waiting for a GPU
    worker), even ones finished: each run with two measurements and an artifact."""
    gpu = i % 2 == 1
    reproduction = Reproduction.objects.create(
        experiment=experiment, requested_by=UserFactory(), seeds=list(range(runs)), device="gpu" if gpu else "cpu"
    )
    for seed in range(runs):
        queued = gpu and seed == 0
        run = Run.objects.create(
            reproduction=reproduction, seed=seed, state=Run.State.QUEUED if queued else Run.State.SUCCEEDED,
            progress=0.0 if queued else 1.0, hardware="cpu", environment={"hostname": "w1"}, worker_host="w1",
        )
        if not queued:
            Measurement.objects.bulk_create(
                [Measurement(run=run, arm=arm, metric="risk", value=1.0) for arm in ("baseline", "intervention")]
            )
            Artifact.objects.create(
                run=run, name="curve.json", sha256="0" * 64, size=3, content_type="application/json"
            )
    return reproduction


def _gpu_worker() -> None:
    """A GPU worker seen recently (so "waiting for a GPU worker" is worked out, not short-cut)."""
    WorkerPresence.objects.create(hostname="gpu-1", queues=["cpu"], last_seen=timezone.now())


# ---------------------------------------------------------------- runs, reproductions, experiments


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_runs_list(reader, author) -> None:
    _gpu_worker()
    experiment = experiment_on(public_finding(author))
    reproduction_on(experiment_on(restricted_finding(author)), 0)
    state = {"i": 0}

    def grow(n: int) -> None:
        # one run per reproduction pair of runs: n runs = n/2 reproductions of 2 runs
        for _ in range(n // 2):
            reproduction_on(experiment, state["i"])
            state["i"] += 1

    # the author also sees the restricted finding's 2 runs
    extra = 2 if reader.who == "author" else 0
    assert_constant(reader, "/api/v1/runs/", grow, items=lambda r: _count_list(r) - extra)


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_reproductions_list(reader, author) -> None:
    _gpu_worker()
    finding = public_finding(author)
    reproduction_on(experiment_on(restricted_finding(author)), 1)
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            # each on its own experiment: the experiment and its finding per row
            reproduction_on(experiment_on(finding), state["i"], runs=3)
            state["i"] += 1

    extra = 1 if reader.who == "author" else 0  # the restricted finding's
    assert_constant(reader, "/api/v1/reproductions/", grow, items=lambda r: _count_list(r) - extra)


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_experiment_reproductions(reader, author) -> None:
    _gpu_worker()
    experiment = experiment_on(public_finding(author))
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            reproduction_on(experiment, state["i"], runs=3)
            state["i"] += 1

    assert_constant(reader, f"/api/v1/experiments/{experiment.pk}/reproductions/", grow, items=_count_list)


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_experiments_list(reader, author) -> None:
    restricted = restricted_finding(author)
    experiment_on(restricted)
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            experiment = experiment_on(public_finding(author))  # one finding each
            reproduction_on(experiment, state["i"])
            reproduction_on(experiment, state["i"] + 1)
            state["i"] += 2

    # every visible experiment; the author also sees the restricted one
    extra = 1 if reader.who == "author" else 0

    def items(response) -> int:
        return _count_list(response) - extra

    assert_constant(reader, "/api/v1/experiments/", grow, items=items)


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_finding_experiments(reader, author) -> None:
    finding = public_finding(author)
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            experiment = experiment_on(finding)
            reproduction_on(experiment, state["i"])
            state["i"] += 1

    assert_constant(reader, f"/api/v1/findings/{finding.pk}/experiments/", grow, items=_count_list)


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_finding_claims(reader, author) -> None:
    finding = public_finding(author)

    def grow(n: int) -> None:
        for _ in range(n):
            first = Claim.objects.create(finding=finding, metric="risk", direction="decrease",
                                         min_relative_effect=0.1, created_by=author, is_current=False)
            ClaimVerdict.objects.create(claim=first, verdict=ClaimVerdict.Verdict.CONFIRMED)
            # a superseded version (listed with history) and its current one, each with a verdict
            current = Claim.objects.create(finding=finding, metric="risk", direction="decrease",
                                           min_relative_effect=0.2, created_by=author, version=2, supersedes=first)
            ClaimVerdict.objects.create(claim=current, verdict=ClaimVerdict.Verdict.REFUTED)

    assert_constant(reader, f"/api/v1/findings/{finding.pk}/claims/?history=true", grow,
                    items=lambda r: _count_list(r) // 2)


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_finding_detail_with_authors_and_links(reader, author) -> None:
    """A finding's authors (accepted and invited), claims and lineage links: one query each, not one
    per author or link."""
    finding = public_finding(author)

    def grow(n: int) -> None:
        for _ in range(n):
            FindingAuthor.objects.create(finding=finding, user=UserFactory(), status=FindingAuthor.Status.ACCEPTED)
            FindingAuthor.objects.create(finding=finding, user=UserFactory(), status=FindingAuthor.Status.INVITED)
            finding.builds_on.add(public_finding(author))
            public_finding(author).builds_on.add(finding)
            restricted_finding(author).builds_on.add(finding)  # hidden from a stranger
            claim = Claim.objects.create(finding=finding, metric="risk", direction="decrease",
                                         min_relative_effect=0.1, created_by=author)
            ClaimVerdict.objects.create(claim=claim)

    assert_constant(reader, f"/api/v1/findings/{finding.pk}/", grow,
                    items=lambda r: (len(r.json()["authors"]) - 2))


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_finding_lineage(reader, author) -> None:
    finding = public_finding(author)

    def grow(n: int) -> None:
        for _ in range(n):
            finding.builds_on.add(public_finding(author))
            public_finding(author).builds_on.add(finding)

    assert_constant(reader, f"/api/v1/findings/{finding.pk}/lineage/", grow,
                    items=lambda r: len(r.json()["ancestors"]))


# ---------------------------------------------------------------- events, subscriptions, tokens


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_events_list(reader, author) -> None:
    finding = public_finding(author)
    hidden = restricted_finding(author)

    def grow(n: int) -> None:
        for i in range(n):
            Event.objects.create(type="run.finished", finding_id=finding.pk, plugin="echo", payload={"run": i})
            Event.objects.create(type="run.finished", finding_id=hidden.pk, plugin="echo", payload={"run": i})

    assert_constant(reader, f"/api/v1/events/?finding={finding.pk}", grow, items=lambda r: len(r.json()["events"]))


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_events_feed(reader, author) -> None:
    """Entries of new findings and finished runs (each summarising its run's measurements), and
    hidden ones of a restricted finding."""
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            finding = public_finding(author)  # one finding (and title) per entry
            run = reproduction_on(experiment_on(finding), 0).runs.first()
            Event.objects.create(type="finding.created", finding_id=finding.pk, payload={"title": finding.title})
            Event.objects.create(type="run.finished", finding_id=finding.pk, plugin="echo",
                                 payload={"run": run.pk, "state": "succeeded"})
            Event.objects.create(type="run.finished", finding_id=restricted_finding(author).pk,
                                 payload={"run": state["i"]})
            state["i"] += 1

    def items(response) -> int:
        return response.content.count(b"<entry>") // (3 if reader.who == "author" else 2)

    n = assert_constant(reader, "/api/v1/events/feed.atom", grow, items=items)
    assert n > 0


def test_feed_measurement_summaries_as_read_one_by_one(author) -> None:
    """The summaries read in one query for the feed are those read per event: the count, the first
    values by arm and metric, truncated past MEASUREMENTS_SUMMARY_MAX; a run without any."""
    from registry.events.presentation import MEASUREMENTS_SUMMARY_MAX, _measurements
    from registry.events.selectors import measurement_summaries_attach

    reproduction = reproduction_on(experiment_on(public_finding(author)), 0, runs=3)
    many, few, empty = list(reproduction.runs.order_by("seed"))
    Measurement.objects.filter(run=empty).delete()
    Measurement.objects.bulk_create(
        [Measurement(run=many, arm=arm, metric=f"m{k:02d}", value=k, censored=k % 5 == 0)
         for k in range(MEASUREMENTS_SUMMARY_MAX) for arm in ("baseline", "intervention")]
    )
    events = [
        Event.objects.create(type="run.finished", payload={"run": run.pk}) for run in (many, few, empty)
    ] + [Event.objects.create(type="run.finished", payload={"run": 10**9}),
         Event.objects.create(type="run.started", payload={"run": many.pk})]
    one_by_one = [_measurements(event) for event in events]
    with CaptureQueriesContext(connection) as ctx:
        measurement_summaries_attach(events)
    assert len(ctx.captured_queries) == 1
    assert [_measurements(event) for event in events] == one_by_one
    assert one_by_one[0]["truncated"] and one_by_one[0]["count"] == 2 * MEASUREMENTS_SUMMARY_MAX + 2
    assert one_by_one[2] == {"count": 0, "values": [], "truncated": False}
    assert one_by_one[4] is None


@pytest.mark.parametrize("reader", ("author", "stranger"), indirect=True)
def test_subscriptions_list(reader, author, stranger) -> None:
    owner = author if reader.who == "author" else stranger
    finding = public_finding(author)

    def grow(n: int) -> None:
        for i in range(n):
            Subscription.objects.create(owner=owner, name=f"s{i}", url="https://example.org/hook", finding=finding,
                                        finding_ref=finding.pk)

    assert_constant(reader, "/api/v1/subscriptions/", grow, items=_count_list)


def test_subscription_deliveries(author) -> None:
    client = APIClient()
    client.force_authenticate(author)
    subscription = Subscription.objects.create(owner=author, name="s", url="https://example.org/hook")

    def grow(n: int) -> None:
        for i in range(n):
            event = Event.objects.create(type="run.finished", payload={"run": i})
            delivery = Delivery.objects.create(subscription=subscription, event=event, attempts=2)
            for number in (1, 2):
                DeliveryAttempt.objects.create(delivery=delivery, number=number, status_code=500,
                                               attempted_at=timezone.now())

    assert_constant(client, f"/api/v1/subscriptions/{subscription.pk}/deliveries/", grow, items=_count_list)


def test_tokens_list(author) -> None:
    client = APIClient()
    client.force_authenticate(author)
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            state["i"] += 1
            ApiToken.objects.create(user=author, name=f"t{state['i']}", prefix="abc", key_hash=f"{state['i']:064d}",
                                    expires_at=timezone.now() + timedelta(days=state["i"] % 3 - 1))

    assert_constant(client, "/api/v1/tokens/", grow, items=_count_list)


# ---------------------------------------------------------------- catalogue, invitations, quotas


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_metrics_list(reader) -> None:
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            state["i"] += 1
            MetricDefinition.objects.create(plugin="counted", name=f"m{state['i']}", plugin_version="1",
                                            axis=MetricDefinition.Axis.SAFETY, higher_is_better=False)

    assert_constant(reader, "/api/v1/metrics/?plugin=counted", grow, items=_count_list)


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_plugins_list(reader, author) -> None:
    """The plugin catalogue reads no row per experiment: the same count however many there are."""

    def grow(n: int) -> None:
        for _ in range(n):
            experiment_on(public_finding(author))

    assert_constant(reader, "/api/v1/plugins/", grow)


def test_my_invitations(stranger) -> None:
    client = APIClient()
    client.force_authenticate(stranger)

    def grow(n: int) -> None:
        for _ in range(n):
            finding = public_finding(UserFactory())  # its own title, inviter and invitee row
            FindingAuthor.objects.create(finding=finding, user=stranger, status=FindingAuthor.Status.INVITED,
                                         invited_by=finding.created_by)

    assert_constant(client, "/api/v1/me/invitations/", grow, items=_count_list)


@pytest.mark.parametrize("who", ("me", "staff"))
def test_quotas(who, author) -> None:
    client = APIClient()
    client.force_authenticate(author if who == "me" else UserFactory(is_staff=True))
    experiment = experiment_on(public_finding(author))
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            reproduction = Reproduction.objects.create(experiment=experiment, requested_by=author, seeds=[0, 1])
            Run.objects.bulk_create([Run(reproduction=reproduction, seed=s) for s in (0, 1)])
            state["i"] += 1

    url = "/api/v1/me/quota/" if who == "me" else f"/api/v1/users/{author.username}/quota/"
    assert_constant(client, url, grow, items=lambda r: r.json()["active_runs"]["used"] // 2)


# ---------------------------------------------------------------- the bulk reads give the same answers


@pytest.mark.parametrize("gpu_worker_seen", [False, True])
def test_waiting_for_gpu_as_the_service_says(author, gpu_worker_seen) -> None:
    """``waiting_for_gpu_worker`` read from the prefetched runs (one look for a GPU worker per
    response) answers as ``services.reproduction_waiting_for_gpu`` does, reproduction by reproduction."""
    from registry.reproductions import selectors, services

    if gpu_worker_seen:
        WorkerPresence.objects.create(hostname="gpu-1", queues=["gpu"], last_seen=timezone.now())
    experiment = experiment_on(public_finding(author))
    for i in range(4):
        reproduction_on(experiment, i)  # odd: GPU with a queued run
    finished_gpu = reproduction_on(experiment, 5)
    finished_gpu.runs.update(state=Run.State.SUCCEEDED)
    expected = {r.pk: services.reproduction_waiting_for_gpu(r) for r in Reproduction.objects.all()}
    assert any(expected.values()) is not gpu_worker_seen
    listed = list(Reproduction.objects.prefetch_related("runs"))
    available = selectors.gpu_availability()
    with CaptureQueriesContext(connection) as ctx:
        got = {r.pk: selectors.reproduction_waiting_for_gpu(r, gpu_available=available) for r in listed}
    assert got == expected
    assert len(ctx.captured_queries) == 1  # the one look for a GPU worker
    assert {r.pk: selectors.reproduction_waiting_for_gpu(r) for r in Reproduction.objects.all()} == expected
    response = APIClient().get(f"/api/v1/experiments/{experiment.pk}/reproductions/")
    assert response.status_code == 200
    assert {r["id"]: r["waiting_for_gpu_worker"] for r in response.json()} == expected


# ---------------------------------------------------------------- writes


def test_a_reproduction_request_costs_the_same_queries_for_one_seed_as_for_eight(
    api, experiment, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    """Asking for a reproduction, dispatch included (after the commit), costs a constant number of
    queries: the new runs are sent as they are (not read back), stamped dispatched in one statement,
    and the response reads them once."""
    from worker.celery import app

    sent: list[list[int]] = []
    # the broker is not under test here (and a session worker must not take these runs)
    monkeypatch.setattr(app, "send_task", lambda name, args, **options: sent.append(args))
    url = f"/api/v1/experiments/{experiment.pk}/reproductions/"
    counts = []
    for seeds in ([100], [0, 1, 2, 3, 4, 5, 6, 7], [200]):
        with django_capture_on_commit_callbacks(execute=True), CaptureQueriesContext(connection) as ctx:
            response = api.post(url, {"seeds": seeds}, format="json")
        assert response.status_code == 202, response.content[:500]
        body = response.json()
        assert [run["seed"] for run in body["runs"]] == seeds and body["state"] == "queued"
        run_ids = [run["id"] for run in body["runs"]]
        assert sent[-len(seeds):] == [[pk] for pk in sorted(run_ids)]
        assert Run.objects.filter(pk__in=run_ids, dispatched_at__isnull=False).count() == len(seeds)
        counts.append(len(ctx.captured_queries))
    assert counts[1] == counts[2], counts  # the first may fill per-process caches
