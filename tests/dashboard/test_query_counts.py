"""A constant number of SQL queries per dashboard page and fragment whatever the amount of data
(issue 11, reads at scale).

Each page is rendered at two sizes (2 items, then 10) of what it lists, with the related rows that
would cost a query each if they were not fetched in bulk: reproductions with several runs (each
run with measurements and an artifact, some reproductions on the GPU waiting for a worker, each
by its own requester), claims with verdicts, co-authors, lineage links, tags. Readers: the
finding's author, a signed-in stranger and an anonymous visitor. The landscape page is counted in
its own tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from registry.accounts.models import ApiToken
from registry.findings.models import Finding, FindingAuthor, Tag
from registry.reproductions.models import Artifact, Measurement, Reproduction, Run, RunSeries, WorkerPresence
from tests.dashboard import builders as b
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SMALL, LARGE = 2, 10
READERS = ("author", "stranger", "anonymous")


def queries(client: Client, url: str) -> tuple[int, list[str], object]:
    """The number of SQL queries one GET costs, the queries, and the response (a 200)."""
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.content[:500])
    return len(ctx.captured_queries), [q["sql"] for q in ctx.captured_queries], response


def assert_constant(
    client: Client, url: Callable[[], str] | str, grow: Callable[[int], None], *,
    items: Callable[[object], int] | None = None,
) -> int:
    """Render with SMALL items, grow to LARGE, render again: the same number of queries.
    ``items(response)`` says how many items the page shows, to check it really grew."""
    target = url if callable(url) else (lambda: url)
    grow(SMALL)
    queries(client, target())  # warm-up: per-process caches (plugins, templates) filled once
    n_small, _, response_small = queries(client, target())
    grow(LARGE - SMALL)
    n_large, sql_large, response_large = queries(client, target())
    print(f"query-count {target()} {SMALL}:{n_small} {LARGE}:{n_large}")  # shown with -s
    if items is not None:
        assert items(response_small) == SMALL, items(response_small)
        assert items(response_large) == LARGE, items(response_large)
    assert n_small == n_large, (
        f"{target()}: {n_small} queries with {SMALL} items, {n_large} with {LARGE}\n"
        + "\n".join(f"{i}: {sql}" for i, sql in enumerate(sql_large))
    )
    return n_large


@pytest.fixture
def author(db):
    return UserFactory()


@pytest.fixture
def reader(request, author, other_user) -> Client:
    client = Client()
    who = getattr(request, "param", "author")
    if who == "author":
        client.force_login(author)
    elif who == "stranger":
        client.force_login(other_user)
    client.who = who
    return client


def _count(response, marker: bytes) -> int:
    return response.content.count(marker)


def _gpu_worker() -> None:
    """A worker seen recently, on the CPU queue only: GPU reproductions wait for a GPU worker."""
    WorkerPresence.objects.create(hostname="cpu-1", queues=["cpu"], last_seen=timezone.now())


def _restricted(author) -> Finding:
    return b.finding(author, title="Hidden", visibility=Finding.Visibility.RESTRICTED)


def add_reproduction(experiment, i: int, *, runs: int = 2) -> Reproduction:
    """A reproduction by its own requester: odd ones on the GPU with a queued run, even ones
    finished; every finished run with two measurements and an artifact."""
    gpu = i % 2 == 1
    reproduction = Reproduction.objects.create(
        experiment=experiment, requested_by=UserFactory(), seeds=list(range(runs)), device="gpu" if gpu else "cpu"
    )
    for seed in range(runs):
        queued = gpu and seed == 0
        run = Run.objects.create(
            reproduction=reproduction, seed=seed, state=Run.State.QUEUED if queued else Run.State.SUCCEEDED,
            progress=0.0 if queued else 1.0, hardware="cpu",
        )
        if not queued:
            Measurement.objects.bulk_create(
                [Measurement(run=run, arm=arm, metric="risk", value=1.0 + seed) for arm in ("baseline", "intervention")]
            )
            Artifact.objects.create(run=run, name=f"curve-{seed}.json", sha256="0" * 64, size=3,
                                    content_type="application/json")
    return reproduction


# ---------------------------------------------------------------- the findings list


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_finding_list(reader, author) -> None:
    _restricted(author)

    def grow(n: int) -> None:
        for i in range(n):
            finding = b.finding(author, title=f"Listed {i}", tags=[f"tag-{i}", "shared"])
            FindingAuthor.objects.create(finding=finding, user=UserFactory(), status=FindingAuthor.Status.ACCEPTED)
            b.echo_experiment(finding, author)

    assert_constant(reader, "/?q=Listed", grow, items=lambda r: _count(r, b"data-finding="))


# ---------------------------------------------------------------- one finding


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_finding_page(reader, author) -> None:
    """Experiments with measured reproductions, claims with verdicts, co-authors, lineage links."""
    _gpu_worker()
    finding = b.finding(author, title="Counted", tags=["counted"])
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            i = state["i"]
            state["i"] += 1
            experiment = b.echo_experiment(finding, author)
            b.measured(experiment, recompute=False)
            add_reproduction(experiment, i)
            b.claim(finding, author, metric="risk" if i % 2 else "skill",
                    direction="decrease" if i % 2 else "non_inferior", **({} if i % 2 else {"margin": 0.1}))
            FindingAuthor.objects.create(finding=finding, user=UserFactory(), status=FindingAuthor.Status.ACCEPTED)
            b.finding(author, title=f"Parent {i}").built_upon_by.add(finding)
            b.finding(author, title=f"Child {i}", builds_on=[finding])
            _restricted(author).builds_on.add(finding)
        b.recompute(finding)

    assert_constant(reader, f"/findings/{finding.pk}/", grow, items=lambda r: _count(r, b'id="effects-experiment-'))


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_theory_page_with_descendants(reader, author) -> None:
    """A theory's roll-up of the findings built on it."""
    theory = b.finding(author, title="Theory", kind=Finding.Kind.THEORY)

    def grow(n: int) -> None:
        for i in range(n):
            fix = b.finding(author, title=f"Fix {i}", builds_on=[theory])
            b.measured(b.echo_experiment(fix, author))

    assert_constant(reader, f"/findings/{theory.pk}/", grow)


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_runs_fragment(reader, author) -> None:
    """The runs section polled by htmx: reproductions with several runs, measurements, artifacts."""
    _gpu_worker()
    finding = b.finding(author, title="Runs")
    experiments = [b.echo_experiment(finding, author), b.echo_experiment(finding, author)]
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            add_reproduction(experiments[state["i"] % 2], state["i"], runs=3)
            state["i"] += 1

    assert_constant(reader, f"/findings/{finding.pk}/runs/", grow,
                    items=lambda r: _count(r, b'data-reproduction="'))


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_runs_fragment_self_reported_and_gpu(reader, author) -> None:
    """Self-reported reproductions and GPU ones waiting for a worker, no worker seen at all."""
    finding = b.finding(author, title="Runs")
    experiment = b.echo_experiment(finding, author)
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            reproduction = add_reproduction(experiment, state["i"])
            if state["i"] % 3 == 0:
                reproduction.source = Reproduction.Source.SELF_REPORTED
                reproduction.save(update_fields=["source"])
            state["i"] += 1

    assert_constant(reader, f"/findings/{finding.pk}/runs/", grow,
                    items=lambda r: _count(r, b'data-reproduction="'))


# ---------------------------------------------------------------- one run


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_run_page(reader, author) -> None:
    finding = b.finding(author, title="A run")
    run = b.measured(b.echo_experiment(finding, author), recompute=False).runs.first()
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            state["i"] += 1
            Measurement.objects.create(run=run, arm="baseline", metric=f"m{state['i']}", value=state["i"])
            b.artifact(run, name=f"a{state['i']}.json", content_type="application/json")
            for arm in ("baseline", "intervention"):  # a curve plotted per name, a line per arm
                RunSeries.objects.create(run=run, arm=arm, name=f"c{state['i']}", steps=[0, 1], values=[0.0, 1.0],
                                         logged=2)

    def items(response) -> int:
        plotted = response.content.count(b"over training steps, this run</title>")
        artifacts = sum(f"a{k}.json".encode() in response.content for k in range(1, LARGE + 1))
        assert plotted == artifacts, (plotted, artifacts)
        return artifacts

    assert_constant(reader, f"/runs/{run.pk}/", grow, items=items)


# ---------------------------------------------------------------- catalogue and account pages


@pytest.mark.parametrize("reader", READERS, indirect=True)
def test_plugins_page(reader, author) -> None:
    def grow(n: int) -> None:
        for i in range(n):
            b.echo_experiment(b.finding(author, title=f"P {i}"), author)

    assert_constant(reader, "/plugins/", grow)


def test_tokens_page(author) -> None:
    client = Client()
    client.force_login(author)
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            state["i"] += 1
            ApiToken.objects.create(user=author, name=f"t{state['i']}", prefix="abc", key_hash=f"{state['i']:064d}",
                                    expires_at=timezone.now() + timedelta(days=state["i"] % 3 - 1))

    assert_constant(client, "/accounts/profile/", grow, items=lambda r: _count(r, b"Revoke t"))


def test_tags_in_filter_form_do_not_grow(author) -> None:
    """The filter form's tag choices: one query for all tags."""
    client = Client()

    def grow(n: int) -> None:
        for _ in range(n):
            Tag.objects.create(name=f"t-{Tag.objects.count()}")
            b.finding(author, title="Tagged", tags=[Tag.objects.last().name])

    assert_constant(client, "/", grow)


# ---------------------------------------------------------------- the bulk reads give the same answers


def test_lineage_walk_matches_finding_lineage(author, other_user) -> None:
    """The dashboard's lineage (one query per level) lists what ``finding_lineage`` (one query per
    finding) finds, for each reader: transitive links, never through a finding the reader may not
    see, direct and further ones apart."""
    from django.contrib.auth.models import AnonymousUser

    from registry.dashboard.selectors import lineage
    from registry.findings.selectors import finding_lineage

    middle = b.finding(author, title="Middle")
    root = b.finding(author, title="Root")
    hidden = _restricted(author)
    middle.builds_on.add(root)
    top = b.finding(author, title="Top")
    root.builds_on.add(top)
    hidden.builds_on.add(middle)  # a child a stranger may not see...
    below_hidden = b.finding(author, title="Below hidden", builds_on=[hidden])  # ...nor walk through
    child = b.finding(author, title="Child", builds_on=[middle])
    grandchild = b.finding(author, title="Grandchild", builds_on=[child])
    for user in (author, other_user, AnonymousUser()):
        reference = finding_lineage(finding=middle, user=user)
        got = lineage(finding=middle, user=user)
        ancestors = [f.pk for f in got["builds_on"] + got["further_ancestors"]]
        descendants = [f.pk for f in got["built_upon_by"] + got["further_descendants"]]
        assert sorted(ancestors) == reference["ancestors"]
        assert sorted(descendants) == reference["descendants"]
        assert [f.pk for f in got["builds_on"]] == [root.pk]
        assert [f.pk for f in got["further_ancestors"]] == [top.pk]
        assert grandchild.pk in descendants and child.pk in [f.pk for f in got["built_upon_by"]]
        sees_hidden = user == author
        assert (hidden.pk in descendants) is sees_hidden
        assert (below_hidden.pk in descendants) is sees_hidden
