"""The findings list at scale (issue 11, reads at scale): full-text search on PostgreSQL's GIN
index, a count that stops counting past a threshold (flagged), the list's order on its index, and a
constant number of SQL queries per request whatever the page holds (list, detail, effects)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from registry.api import pagination
from registry.findings.models import Finding, FindingAuthor
from registry.findings.services import finding_create
from tests.dashboard import builders as b

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SMALL, LARGE = 2, 10


def _ids(client: APIClient, **params) -> list[int]:
    response = client.get("/api/v1/findings/", params)
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


# ---------------------------------------------------------------- full-text search


def test_q_matches_word_prefixes_in_title_or_summary_any_case(anon, user):
    heads = finding_create(user=user, title="Induction heads form abruptly", kind=Finding.Kind.THEORY)
    checker = finding_create(
        user=user, title="A fix", kind=Finding.Kind.FIX, summary="Removes checkerboard artifacts in GANs."
    )
    hyphen = finding_create(user=user, title="Sparse auto-encoder features", kind=Finding.Kind.OBSERVATION)
    assert set(_ids(anon, q="induct")) == {heads.pk}  # a word's start
    assert set(_ids(anon, q="INDUCTION Heads")) == {heads.pk}  # every word, any case
    assert set(_ids(anon, q="induction checkerboard")) == set()  # all words must match
    assert set(_ids(anon, q="checker")) == {checker.pk}  # in the summary
    assert set(_ids(anon, q="auto-encoder")) == {hyphen.pk}
    assert set(_ids(anon, q="encoder")) == {hyphen.pk}  # a part of a hyphenated word
    assert set(_ids(anon, q="duct")) == set()  # not a substring inside a word
    assert set(_ids(anon, q="heads", kind="observation")) == set()  # with the other filters


def test_q_without_a_word_falls_back_to_a_substring_and_odd_input_is_never_a_500(anon, user):
    plus = finding_create(user=user, title="C++ kernels: a + b", kind=Finding.Kind.FIX)
    assert set(_ids(anon, q="+ b")) == {plus.pk}  # no word at all in "+"? "b" is one: full-text
    assert set(_ids(anon, q="++")) == {plus.pk}  # no word: icontains
    for odd in ("'", "&|!", ":*", "a" * 500, "(x", "x & y", "é", "\\"):
        response = anon.get("/api/v1/findings/", {"q": odd})
        assert response.status_code == 200, (odd, response.content)


def test_q_hides_what_the_reader_may_not_see(anon, user, other_user, client_for):
    hidden = finding_create(
        user=user, title="Secret induction result", kind=Finding.Kind.THEORY,
        visibility=Finding.Visibility.RESTRICTED,
    )
    assert _ids(anon, q="induction") == []
    assert _ids(client_for(other_user), q="induction") == []
    assert _ids(client_for(user), q="induction") == [hidden.pk]


def test_search_uses_the_gin_index(user):
    finding_create(user=user, title="Induction heads", kind=Finding.Kind.THEORY)
    from registry.findings.selectors import finding_list, finding_search_filter

    with connection.cursor() as cursor:  # a tiny table: make scanning it all the planner's last resort
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
    plan = finding_search_filter(Finding.objects.all(), "induct").explain()
    assert "finding_search_gin" in plan, plan
    assert finding_search_filter(finding_list(user=None), "induct").count() == 1


def test_the_default_order_walks_the_created_id_index(user):
    finding_create(user=user, title="One", kind=Finding.Kind.THEORY)
    from registry.findings.selectors import finding_list

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
    plan = finding_list(user=None).order_by("-created_at", "-id")[:25].explain()
    assert "finding_created_id_desc" in plan, plan


def test_ties_on_created_at_are_broken_by_id_newest_first(anon, user):
    made = [finding_create(user=user, title=f"Tie {i}", kind=Finding.Kind.FIX) for i in range(3)]
    Finding.objects.filter(pk__in=[f.pk for f in made]).update(created_at=made[0].created_at)
    assert _ids(anon) == sorted((f.pk for f in made), reverse=True)


# ---------------------------------------------------------------- the count


def test_count_is_exact_below_the_threshold(anon, user):
    for i in range(3):
        finding_create(user=user, title=f"Exact {i}", kind=Finding.Kind.FIX)
    body = anon.get("/api/v1/findings/", {"page_size": 2}).json()
    assert body["count"] == 3 and body["count_estimated"] is False
    assert body["next"] is not None and len(body["results"]) == 2
    assert set(body) == {"count", "count_estimated", "next", "previous", "results"}


def test_past_the_threshold_the_count_is_an_estimate_and_paging_still_works(anon, user, monkeypatch):
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 3)
    made = [finding_create(user=user, title=f"Many {i}", kind=Finding.Kind.FIX) for i in range(7)]
    newest_first = [f.pk for f in reversed(made)]
    with CaptureQueriesContext(connection) as ctx:
        first = anon.get("/api/v1/findings/", {"page_size": 3})
    assert first.status_code == 200
    body = first.json()
    assert body["count_estimated"] is True and body["count"] >= 4
    assert [r["id"] for r in body["results"]] == newest_first[:3]
    counts = [q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 4" in sql for sql in counts), counts  # never the whole table
    second = anon.get(body["next"]).json()
    assert [r["id"] for r in second["results"]] == newest_first[3:6]
    last = anon.get(second["next"]).json()
    assert [r["id"] for r in last["results"]] == newest_first[6:] and last["next"] is None
    assert anon.get("/api/v1/findings/", {"page_size": 3, "page": 4}).status_code == 404
    assert anon.get("/api/v1/findings/", {"page_size": 3, "page": "x"}).status_code == 404
    filtered = anon.get("/api/v1/findings/", {"page_size": 3, "q": "many", "kind": "fix"}).json()
    assert filtered["count_estimated"] is True and len(filtered["results"]) == 3


def test_the_schema_documents_count_estimated(anon):
    schema = anon.get("/api/schema/", {"format": "json"})
    assert schema.status_code == 200
    page = schema.json()["components"]["schemas"]["PaginatedFindingList"]
    assert page["properties"]["count_estimated"]["type"] == "boolean"


# ---------------------------------------------------------------- constant query counts


def _queries(client: APIClient, url: str) -> tuple[int, list[str], object]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, (url, response.content[:500])
    sql = [q["sql"] for q in ctx.captured_queries]
    assert not [s for s in sql if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))], sql  # reads
    return len(sql), sql, response


def _assert_constant(client: APIClient, url: Callable[[], str], grow: Callable[[int], None], items=None) -> None:
    grow(SMALL)
    _queries(client, url())  # warm-up (per-process caches)
    n_small, _, small = _queries(client, url())
    grow(LARGE - SMALL)
    n_large, sql, large = _queries(client, url())
    if items is not None:
        assert (items(small), items(large)) == (SMALL, LARGE)
    assert n_small == n_large, f"{n_small} queries with {SMALL} items, {n_large} with {LARGE}:\n" + "\n".join(sql)


@pytest.fixture(params=["author", "stranger", "anonymous"])
def reader(request, user, other_user) -> APIClient:
    client = APIClient()
    if request.param == "author":
        client.force_authenticate(user)
    elif request.param == "stranger":
        client.force_authenticate(other_user)
    return client


def _rich_finding(owner, coauthor, parent: Finding, i: int, restricted_to=None) -> Finding:
    """A finding with what costs a query per row when not fetched in bulk: tags, a co-author and
    an invitation, claims with verdicts, an experiment with runs, a parent and a child."""
    fields = {"visibility": Finding.Visibility.RESTRICTED, "restricted_to": restricted_to} if restricted_to else {}
    finding = b.finding(
        owner, title=f"Listed finding {i}", tags=["scale", f"t{i}"], builds_on=[parent], **fields
    )
    FindingAuthor.objects.create(finding=finding, user=coauthor, status=FindingAuthor.Status.ACCEPTED)
    b.claim(finding, owner)
    b.measured(b.echo_experiment(finding, owner))
    b.finding(owner, title=f"Child {i}", builds_on=[finding])
    return finding


def test_findings_list_with_filter_and_search_costs_the_same_for_2_or_10_findings(reader, user, other_user):
    from tests.factories import UserFactory

    coauthor = UserFactory()
    parent = b.finding(user, title="Parent", kind=Finding.Kind.THEORY)
    hidden_parent = b.finding(user, title="Hidden parent", visibility=Finding.Visibility.RESTRICTED)
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            i = state["i"]
            _rich_finding(user, coauthor, hidden_parent if i % 2 else parent, i)
            state["i"] += 1

    _assert_constant(
        reader, lambda: "/api/v1/findings/?q=listed&tag=scale&page_size=50", grow,
        items=lambda r: len(r.json()["results"]),
    )


def test_finding_detail_and_effects_cost_the_same_whatever_their_size(reader, user):
    from tests.factories import UserFactory

    finding = b.finding(user, title="Detailed", tags=["a"])
    experiment = b.echo_experiment(finding, user)

    def grow(n: int) -> None:
        for _ in range(n):
            coauthor = UserFactory()
            FindingAuthor.objects.create(finding=finding, user=coauthor, status=FindingAuthor.Status.ACCEPTED)
            b.claim(finding, user)
            b.finding(user, title="Child", builds_on=[finding])
            b.measured(experiment)

    _assert_constant(reader, lambda: f"/api/v1/findings/{finding.pk}/", grow)
    _assert_constant(reader, lambda: f"/api/v1/findings/{finding.pk}/effects/", lambda n: grow(n))
