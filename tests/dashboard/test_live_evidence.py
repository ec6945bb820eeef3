"""Live evidence on the finding page (issue 13, part 3): the claims, verdicts, effects, axis scores
and status are one fragment the page polls while runs are queued or running or a recompute is
pending. Each poll carries the ETag of what the page shows; the server answers 304 while nothing
the evidence depends on changed (without rendering), the new fragment once a run finished or a
recompute landed. Visibility comes first, and reading never writes."""

from __future__ import annotations

from html import escape

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from registry.effects.models import FindingEffects
from registry.findings.models import Finding
from registry.reproductions.models import Run
from tests.dashboard import builders as b
from tests.dashboard.test_effects_pages import claim_row
from tests.dashboard.test_query_counts import assert_constant

pytestmark = pytest.mark.django_db


def evidence_url(finding: Finding) -> str:
    return f"/findings/{finding.pk}/evidence/"


def fetch(client: Client, url: str, etag: str | None = None):
    headers = {"HTTP_IF_NONE_MATCH": etag} if etag else {}
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, **headers)
    writes = [q["sql"] for q in ctx.captured_queries
              if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
    assert writes == [], f"a read wrote: {writes}"
    response.n_queries = len(ctx.captured_queries)
    return response


@pytest.fixture
def owner_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def all_readers(readers, owner_client) -> dict[str, Client]:
    return {**readers, "owner": owner_client}


@pytest.fixture
def waiting(user):
    """A finding with a claim and two queued runs: nothing measured yet."""
    finding = b.finding(user, title="Live")
    experiment = b.echo_experiment(finding, user)
    claim = b.claim(finding, user, "risk", "decrease", min_relative_effect=0.3)
    reproduction = b.queued(experiment, 2)
    b.recompute(finding)  # the recompute the claim asked for has run: nothing pending
    assert not FindingEffects.objects.get(finding=finding).pending
    return finding, experiment, claim, reproduction


def test_fragment_then_304_while_nothing_changed_for_every_reader(all_readers, waiting):
    finding, _, claim, _ = waiting
    for who, client in all_readers.items():
        first = fetch(client, evidence_url(finding))
        assert first.status_code == 200, who
        etag = first["ETag"]
        assert etag.startswith('"ev-') and etag.endswith('"')
        assert "no-cache" in first["Cache-Control"] and "private" in first["Cache-Control"]
        html = first.content.decode()
        assert 'id="evidence"' in html and f'data-etag="{escape(etag)}"' in html  # the next poll sends it
        assert "awaiting data" in claim_row(html, claim.pk)
        assert 'hx-swap-oob="true"' in html and 'id="finding-badges"' in html  # the status badge too
        again = fetch(client, evidence_url(finding), etag)
        assert again.status_code == 304, who
        assert again.content == b""
        assert again["ETag"] == etag
        assert again.n_queries < first.n_queries
        stale = fetch(client, evidence_url(finding), '"ev-something-else"')
        assert stale.status_code == 200 and stale["ETag"] == etag


def test_the_page_carries_the_etag_and_polls_only_while_live(client, waiting, user):
    finding, experiment, _, reproduction = waiting
    html = client.get(f"/findings/{finding.pk}/").content.decode()
    etag = client.get(evidence_url(finding))["ETag"]
    evidence = html.split('id="evidence"')[1].split(">")[0]
    assert f'data-etag="{escape(etag)}"' in evidence
    assert f'hx-get="{evidence_url(finding)}"' in evidence and 'hx-trigger="every 3s"' in evidence
    assert 'data-live="on"' in evidence

    reproduction.runs.update(state=Run.State.CANCELLED)
    html = client.get(f"/findings/{finding.pk}/").content.decode()
    evidence = html.split('id="evidence"')[1].split(">")[0]
    assert 'data-live="off"' in evidence and "hx-trigger" not in evidence and "hx-get" not in evidence

    FindingEffects.objects.update_or_create(finding=finding, defaults={"pending": True})
    evidence = client.get(f"/findings/{finding.pk}/").content.decode().split('id="evidence"')[1].split(">")[0]
    assert 'data-live="on"' in evidence, "a pending recompute keeps the page polling"


def test_verdict_changes_when_runs_finish_and_the_recompute_lands(client, waiting, user):
    finding, experiment, claim, reproduction = waiting
    response = fetch(client, evidence_url(finding))
    etag = response["ETag"]
    assert "awaiting data" in claim_row(response.content.decode(), claim.pk)

    # one run starts: the run states changed, so the evidence's ETag did
    first = reproduction.runs.order_by("id").first()
    Run.objects.filter(pk=first.pk).update(state=Run.State.RUNNING, started_at=timezone.now())
    response = fetch(client, evidence_url(finding), etag)
    assert response.status_code == 200 and response["ETag"] != etag
    etag = response["ETag"]
    assert fetch(client, evidence_url(finding), etag).status_code == 304

    # the runs finish with results; the recompute is requested (pending) with them
    reproduction.runs.update(state=Run.State.CANCELLED)
    b.measured(experiment, recompute=False)
    FindingEffects.objects.update_or_create(finding=finding, defaults={"pending": True})
    response = fetch(client, evidence_url(finding), etag)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Effects are being recomputed" in html
    assert "no data yet" in claim_row(html, claim.pk)  # nothing queued any more, not recomputed yet
    etag = response["ETag"]

    # the recompute lands: verdict, effects, axis scores and status all change, in one fragment
    b.recompute(finding)
    response = fetch(client, evidence_url(finding), etag)
    assert response.status_code == 200
    html = response.content.decode()
    row = claim_row(html, claim.pk)
    assert "badge--verdict-confirmed" in row and "awaiting data" not in row
    assert "Effects are being recomputed" not in html
    assert "×2.0 better" in html  # the safety axis score (risk halves)
    finding.refresh_from_db()
    assert finding.status == Finding.Status.REPRODUCED
    assert "badge--status-reproduced" in html.split('id="finding-badges"')[1]  # swapped out of band
    assert 'data-live="off"' in html and "hx-trigger" not in html.split(">")[0]
    assert fetch(client, evidence_url(finding), response["ETag"]).status_code == 304


def test_etag_moves_with_claims_experiments_and_recompute_errors(client, waiting, user):
    finding, experiment, _, _ = waiting
    etag = client.get(evidence_url(finding))["ETag"]
    b.claim(finding, user, "skill", "non_inferior", margin=0.05)
    etag2 = client.get(evidence_url(finding))["ETag"]
    assert etag2 != etag
    b.echo_experiment(finding, user)
    etag3 = client.get(evidence_url(finding))["ETag"]
    assert etag3 != etag2
    FindingEffects.objects.update_or_create(finding=finding, defaults={"error": "boom"})
    response = client.get(evidence_url(finding), HTTP_IF_NONE_MATCH=etag3)
    assert response.status_code == 200 and "boom" in response.content.decode()


def test_hidden_finding_is_a_404_whatever_the_validators(all_readers, user):
    finding = b.finding(user, title="Hidden", visibility=Finding.Visibility.RESTRICTED)
    b.queued(b.echo_experiment(finding, user), 1)
    owner = all_readers["owner"].get(evidence_url(finding))
    assert owner.status_code == 200
    etag = owner["ETag"]
    for who in ("anonymous", "stranger"):
        for headers in ({}, {"HTTP_IF_NONE_MATCH": etag}, {"HTTP_IF_NONE_MATCH": "*"}):
            response = all_readers[who].get(evidence_url(finding), **headers)
            assert response.status_code == 404, (who, headers)
            assert b"Hidden" not in response.content and "ETag" not in response
    assert all_readers["owner"].get(evidence_url(finding), HTTP_IF_NONE_MATCH=etag).status_code == 304
    assert all_readers["anonymous"].get("/findings/999999/evidence/").status_code == 404


def test_only_get(owner_client, waiting):
    finding = waiting[0]
    assert owner_client.post(evidence_url(finding)).status_code == 405


@pytest.mark.postgres
@pytest.mark.parametrize("who", ["owner", "stranger", "anonymous"])
def test_constant_queries_for_the_fragment_and_the_304(who, all_readers, user):
    client = all_readers[who]
    finding = b.finding(user, title="Counted")
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            i = state["i"]
            state["i"] += 1
            experiment = b.echo_experiment(finding, user)
            b.measured(experiment, recompute=False)
            b.queued(experiment, 2)
            b.claim(finding, user, metric="risk" if i % 2 else "skill",
                    direction="decrease" if i % 2 else "non_inferior", **({} if i % 2 else {"margin": 0.1}))
        b.recompute(finding)

    url = evidence_url(finding)
    assert_constant(client, url, grow, items=lambda r: r.content.count(b'class="claim"'))
    # the 304 path costs the same few queries at any size (visibility, then the one state query)
    etag = client.get(url)["ETag"]
    small = fetch(client, url, etag)
    grow(5)
    etag = client.get(url)["ETag"]
    large = fetch(client, url, etag)
    assert small.status_code == large.status_code == 304
    assert small.n_queries == large.n_queries


def test_etag_describes_the_status_the_fragment_renders(waiting):
    """The status is rendered from the finding the view loaded; a status that changed after that
    load must not be in the ETag already (the next poll would be a 304 and the new badge never
    shown)."""
    from registry.dashboard.selectors import evidence_state, finding_evidence

    finding = waiting[0]
    loaded = Finding.objects.get(pk=finding.pk)  # what the view holds and renders
    Finding.objects.filter(pk=finding.pk).update(status=Finding.Status.REPRODUCED)  # changes meanwhile
    shown = finding_evidence(finding=loaded, user=None)
    assert shown["finding"].status != Finding.Status.REPRODUCED
    fresh = Finding.objects.get(pk=finding.pk)
    assert shown["evidence"]["etag"] != evidence_state(fresh)["etag"]
    assert evidence_state(loaded)["etag"] == shown["evidence"]["etag"]


def test_a_fragment_rendered_behind_a_recompute_keeps_polling(waiting):
    """A recompute that lands between the view's read of the finding and the evidence state's
    query: the fragment shows the old status beside the new verdicts; it must stay live (poll
    again) rather than stop with a stale badge."""
    from registry.dashboard.selectors import evidence_state
    from registry.effects.models import FindingEffects

    finding = waiting[0]
    Run.objects.filter(reproduction__experiment__finding=finding).update(state=Run.State.SUCCEEDED)
    FindingEffects.objects.filter(finding=finding).update(pending=False)
    loaded = Finding.objects.get(pk=finding.pk)  # what the view holds and renders
    assert not evidence_state(loaded)["live"]  # nothing active, nothing pending: polling may stop
    Finding.objects.filter(pk=finding.pk).update(status=Finding.Status.REPRODUCED)  # the recompute lands
    assert evidence_state(loaded)["live"]
    assert not evidence_state(Finding.objects.get(pk=finding.pk))["live"]
