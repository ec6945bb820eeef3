"""The dashboard's findings list filters as the API does: full-text word prefixes on PostgreSQL,
EXISTS for tags and plugins (a finding is listed once, whatever it matches twice), and past
``EXACT_COUNT_LIMIT`` matches an estimated count ("About N") instead of counting every row."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from registry.api.pagination import EXACT_COUNT_LIMIT
from registry.findings.models import Finding, Tag
from tests.dashboard import builders as b
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def _listed(response) -> list[int]:
    assert response.status_code == 200, response.status_code
    return [int(pk) for pk in re.findall(r'data-finding="(\d+)"', response.content.decode())]


def test_search_matches_word_prefixes_in_any_case_and_lists_a_finding_once():
    author = UserFactory()
    heads = b.finding(author, title="Induction heads form abruptly", summary="Induction of copying heads.")
    b.echo_experiment(heads, author)
    b.echo_experiment(heads, author)  # two experiments of the same plugin: still one row
    for name in ("circuits", "attention"):
        heads.tags.add(Tag.objects.get_or_create(name=name)[0])
    other = b.finding(author, title="Sparse autoencoders", summary="Dictionary learning.")
    client = Client()

    assert _listed(client.get("/", {"q": "induct HEAD"})) == [heads.pk]
    assert _listed(client.get("/", {"q": "dictionary"})) == [other.pk]
    assert _listed(client.get("/", {"plugin": "echo"})) == [heads.pk]
    assert _listed(client.get("/", {"tag": "circuits"})) == [heads.pk]
    assert _listed(client.get("/", {"q": "heads", "tag": "attention", "plugin": "echo"})) == [heads.pk]
    assert _listed(client.get("/", {"q": "nothing-like-this"})) == []


def test_past_the_exact_limit_the_count_is_an_estimate_and_pages_still_work():
    author = UserFactory()
    Finding.objects.bulk_create(
        Finding(title=f"Finding {i}", summary="bulk", kind=Finding.Kind.THEORY, created_by=author,
                visibility=Finding.Visibility.PUBLIC)
        for i in range(EXACT_COUNT_LIMIT + 5)
    )
    client = Client()
    response = client.get("/")
    body = response.content.decode()
    assert response.status_code == 200
    assert re.search(r"About [\d,]+ findings", body), body[:2000]
    assert 'rel="next"' in body
    assert len(_listed(client.get("/", {"page": 2}))) > 0
    # past the end of an estimated count, or not a number: a page of findings, never a 500 (an
    # offset past the database's bigint was one)
    for page in (10_000, "x", 99999999999999999999, 9223372036854775807):
        assert _listed(client.get("/", {"page": page})), page
