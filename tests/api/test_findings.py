"""Findings through the REST API: CRUD, permissions, filters, lineage, visibility, x-risk sheet."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from registry.findings.models import Finding
from registry.findings.services import claim_create
from registry.reproductions.models import Experiment
from tests.api.helpers import FINDINGS, assert_error, counts, event_types
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def detail(finding_id: int) -> str:
    return f"{FINDINGS}{finding_id}/"


# ---------------------------------------------------------------- create


def test_create_returns_201_with_creator_as_author_normalised_tags_and_links(api, user, other_user, make_finding):
    parent = make_finding(title="Deconvolution overlap theory")
    response = api.post(
        FINDINGS,
        {
            "title": "Resize-then-convolve removes checkerboards",
            "kind": "fix",
            "summary": "Use *nearest-neighbour* upsampling.",
            "tags": ["Vision", "checkerboard", "VISION"],
            "references": ["doi:10.23915/distill.00003"],
            "builds_on": [parent.pk],
            "authors": [other_user.username],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["authors"] == [user.username]  # other_user is invited until they accept
    assert body["invited_authors"] == [other_user.username]
    assert body["tags"] == ["checkerboard", "vision"]
    assert body["builds_on"] == [parent.pk]
    assert body["status"] == "unreproduced"
    assert body["visibility"] == "public"
    assert body["references"] == ["doi:10.23915/distill.00003"]
    assert body["url"] == detail(body["id"])
    assert "<em>nearest-neighbour</em>" in body["summary_html"]

    stored = Finding.objects.get(pk=body["id"])
    assert stored.created_by == user
    assert sorted(stored.tags.values_list("name", flat=True)) == ["checkerboard", "vision"]
    assert list(stored.builds_on.values_list("pk", flat=True)) == [parent.pk]
    assert event_types(stored.pk) == ["finding.created"]
    assert api.get(detail(parent.pk)).json()["built_upon_by"] == [stored.pk]


def test_read_only_fields_cannot_be_set(api):
    body = api.post(FINDINGS, {"title": "Sneaky", "kind": "fix", "status": "reproduced", "effects_stale": True,
                               "id": 1, "created_at": "2000-01-01T00:00:00Z"}, format="json").json()
    stored = Finding.objects.get(pk=body["id"])
    assert stored.status == "unreproduced" and stored.effects_stale is False
    assert stored.created_at.year > 2000


def test_create_without_authors_has_the_creator_only(api, user):
    body = api.post(FINDINGS, {"title": "Solo", "kind": "observation"}, format="json").json()
    assert body["authors"] == [user.username]
    assert body["tags"] == [] and body["builds_on"] == [] and body["claims"] == [] and body["experiments"] == []


def test_summary_html_is_sanitised(api):
    summary = (
        "# Heading\n\n**bold** <script>alert('x')</script>\n\n"
        '<img src="x" onerror="alert(1)">\n\n'
        '<p onclick="steal()">para</p>\n\n'
        "[evil](javascript:alert(1)) [fine](https://example.org/paper)\n\n"
        '<a href="JaVaScRiPt:alert(2)">raw</a> <a href="data:text/html,hi">data</a>\n\n'
        "<iframe src='https://evil.example'></iframe><style>body{}</style>"
    )
    response = api.post(FINDINGS, {"title": "XSS", "kind": "observation", "summary": summary}, format="json")
    assert response.status_code == 201
    html = response.json()["summary_html"]
    lowered = html.lower()
    assert "<strong>bold</strong>" in html
    assert "<h1>heading</h1>" in lowered
    assert 'href="https://example.org/paper"' in html
    for forbidden in ("<script", "onerror", "onclick", "javascript:", "data:text", "<iframe", "<style", "<img"):
        assert forbidden not in lowered, (forbidden, html)
    # the stored source is kept verbatim; only the rendering is sanitised
    assert response.json()["summary"] == summary
    assert api.get(detail(response.json()["id"])).json()["summary_html"] == html


# ---------------------------------------------------------------- list, pagination, filters, ordering


def test_list_is_paginated(api, make_finding):
    for index in range(3):
        make_finding(title=f"F{index}")
    body = api.get(FINDINGS, {"page_size": 2}).json()
    assert body["count"] == 3
    assert len(body["results"]) == 2
    assert body["next"] and body["previous"] is None
    second = api.get(FINDINGS, {"page_size": 2, "page": 2}).json()
    assert len(second["results"]) == 1
    assert {r["id"] for r in body["results"]}.isdisjoint({r["id"] for r in second["results"]})


def test_page_size_is_capped_at_200(anon, user):
    Finding.objects.bulk_create([Finding(title=f"Bulk {i}", kind="theory", created_by=user) for i in range(205)])
    body = anon.get(FINDINGS, {"page_size": 1000}).json()
    assert body["count"] == 205
    assert len(body["results"]) == 200
    assert len(anon.get(FINDINGS).json()["results"]) == 25


def test_list_query_count_does_not_grow_with_the_page(anon, user, make_finding, django_assert_max_num_queries):
    parent = make_finding(title="Parent")
    for index in range(20):
        finding = make_finding(title=f"F{index}", tags=["a", "b"], builds_on=[parent])
        old = claim_create(finding=finding, user=user, metric="risk", direction="decrease")
        claim_create(finding=finding, user=user, metric="risk", direction="decrease", supersedes=old)
        Experiment.objects.create(finding=finding, plugin="echo", created_by=user)
    with django_assert_max_num_queries(20):
        body = anon.get(FINDINGS, {"page_size": 50}).json()
    assert body["count"] == 21
    claims = [c for row in body["results"] for c in row["claims"]]
    assert len(claims) == 20 and all(c["version"] == 2 and c["is_current"] for c in claims)


def _ids(client, **params) -> set[int]:
    response = client.get(FINDINGS, {"page_size": 200, **params})
    assert response.status_code == 200, response.json()
    return {row["id"] for row in response.json()["results"]}


def test_filters(anon, user, other_user, make_finding, make_experiment):
    theory = make_finding(title="Superposition theory", kind="theory", tags=["superposition"])
    fix = make_finding(title="Resize convolution", kind="fix", tags=["vision", "checkerboard"],
                       summary="Removes the checkerboard pattern")
    observation = make_finding(owner=other_user, title="Induction heads", kind="observation", tags=["Vision"])
    Finding.objects.filter(pk=fix.pk).update(status=Finding.Status.REPRODUCED)
    make_experiment(fix, reproduce=False)
    Experiment.objects.create(finding=observation, plugin="crashing", created_by=other_user)

    assert _ids(anon, kind="fix") == {fix.pk}
    assert _ids(anon, kind="observation") == {observation.pk}
    assert _ids(anon, status="reproduced") == {fix.pk}
    assert _ids(anon, status="unreproduced") == {theory.pk, observation.pk}
    assert _ids(anon, tag="vision") == {fix.pk, observation.pk}
    assert _ids(anon, tag="VISION") == {fix.pk, observation.pk}
    assert _ids(anon, tag="superposition") == {theory.pk}
    assert _ids(anon, plugin="echo") == {fix.pk}
    assert _ids(anon, plugin="crashing") == {observation.pk}
    assert _ids(anon, plugin="nothing") == set()
    assert _ids(anon, author=user.username) == {theory.pk, fix.pk}
    assert _ids(anon, author=other_user.username) == {observation.pk}
    assert _ids(anon, q="checkerboard") == {fix.pk}  # in the summary
    assert _ids(anon, q="INDUCTION") == {observation.pk}  # in the title, any case
    assert _ids(anon, kind="fix", tag="vision") == {fix.pk}
    assert _ids(anon, kind="theory", tag="vision") == set()


def test_filter_by_axis_uses_the_metrics_of_current_claims(anon, user, make_finding):
    safety = make_finding(title="Safety claim")
    capability = make_finding(title="Capability claim")
    neither = make_finding(title="No claim")
    claim_create(finding=safety, user=user, metric="risk", direction="decrease", min_relative_effect=0.5)
    claim_create(finding=capability, user=user, metric="skill", direction="increase", min_relative_effect=0.1)
    assert _ids(anon, axis="safety") == {safety.pk}
    assert _ids(anon, axis="capability") == {capability.pk}
    assert _ids(anon, axis="diagnostic") == set()
    assert neither.pk not in _ids(anon, axis="safety") | _ids(anon, axis="capability")


def test_filter_by_axis_ignores_superseded_claims(anon, user, make_finding):
    finding = make_finding(title="Changed its mind")
    old = claim_create(finding=finding, user=user, metric="risk", direction="decrease", min_relative_effect=0.5)
    claim_create(finding=finding, user=user, metric="skill", direction="increase", supersedes=old)
    assert _ids(anon, axis="safety") == set()
    assert _ids(anon, axis="capability") == {finding.pk}


def test_ordering(anon, make_finding):
    for title in ("Beta", "alpha", "Gamma"):
        make_finding(title=title)
    titles = [r["title"] for r in anon.get(FINDINGS, {"ordering": "title"}).json()["results"]]
    assert titles == sorted(titles)
    reverse = [r["title"] for r in anon.get(FINDINGS, {"ordering": "-title"}).json()["results"]]
    assert reverse == titles[::-1]
    newest_first = [r["title"] for r in anon.get(FINDINGS).json()["results"]]
    assert newest_first == ["Gamma", "alpha", "Beta"]


# ---------------------------------------------------------------- retrieve, update, delete, permissions


def test_retrieve(anon, finding):
    response = anon.get(detail(finding.pk))
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == finding.pk and body["title"] == finding.title
    for key in ("summary_html", "claims", "experiments", "builds_on", "built_upon_by", "xrisk_sheet", "authors"):
        assert key in body


def test_retrieve_unknown_is_404_json(anon):
    assert_error(anon.get(detail(987654321)), 404)
    assert_error(anon.get(f"{FINDINGS}not-a-number/"), 404)


def test_patch_by_author(api, finding):
    response = api.patch(detail(finding.pk), {"title": "Renamed", "tags": ["New-Tag"]}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["title"] == "Renamed"
    assert response.json()["tags"] == ["new-tag"]
    finding.refresh_from_db()
    assert finding.title == "Renamed"
    assert list(finding.tags.values_list("name", flat=True)) == ["new-tag"]
    assert event_types(finding.pk)[-1] == "finding.updated"


def test_patch_and_delete_by_another_user_are_refused_and_change_nothing(client_for, other_user, finding):
    other = client_for(other_user)
    before = counts()
    response = other.patch(detail(finding.pk), {"title": "Hijacked", "tags": ["spam"]}, format="json")
    assert_error(response, 403)
    response = other.put(detail(finding.pk), {"title": "Hijacked", "kind": "fix"}, format="json")
    assert_error(response, 403)
    response = other.delete(detail(finding.pk))
    assert_error(response, 403)
    # refused before the body is even looked at
    assert_error(other.patch(detail(finding.pk), {"kind": "bogus", "authors": ["ghost"]}, format="json"), 403)
    finding.refresh_from_db()
    assert finding.title != "Hijacked" and finding.kind == "theory"
    assert not finding.tags.exists()
    assert counts() == before
    assert event_types(finding.pk) == ["finding.created"]


def test_a_co_author_may_edit(client_for, other_user, make_finding):
    finding = make_finding(authors=[other_user])
    assert_error(client_for(other_user).patch(detail(finding.pk), {"summary": "Edited"}, format="json"), 403)
    accept = f"{detail(finding.pk)}authors/{other_user.username}/accept"
    assert client_for(other_user).post(accept).status_code == 200
    response = client_for(other_user).patch(detail(finding.pk), {"summary": "Edited"}, format="json")
    assert response.status_code == 200
    assert Finding.objects.get(pk=finding.pk).summary == "Edited"


def test_anonymous_writes_are_refused(anon, finding):
    before = counts()
    for response in (
        anon.post(FINDINGS, {"title": "Anon", "kind": "fix"}, format="json"),
        anon.patch(detail(finding.pk), {"title": "Anon"}, format="json"),
        anon.delete(detail(finding.pk)),
    ):
        assert response.status_code in (401, 403)
        assert_error(response, response.status_code)
    assert counts() == before
    assert Finding.objects.get(pk=finding.pk).title != "Anon"


def test_staff_may_edit_and_delete(client_for, staff_user, finding):
    staff = client_for(staff_user)
    response = staff.patch(detail(finding.pk), {"kind": "observation"}, format="json")
    assert response.status_code == 200
    assert Finding.objects.get(pk=finding.pk).kind == "observation"
    assert staff.delete(detail(finding.pk)).status_code == 204
    assert not Finding.objects.filter(pk=finding.pk).exists()
    assert event_types(finding.pk)[-1] == "finding.deleted"


def test_delete_by_author(api, finding, make_experiment):
    make_experiment(finding)
    response = api.delete(detail(finding.pk))
    assert response.status_code == 204
    assert not Finding.objects.filter(pk=finding.pk).exists()
    assert not Experiment.objects.filter(finding_id=finding.pk).exists()
    assert api.get(detail(finding.pk)).status_code == 404


def test_patch_authors_keeps_the_creator(api, user, other_user, finding):
    response = api.patch(detail(finding.pk), {"authors": [other_user.username]}, format="json")
    assert response.status_code == 200
    assert response.json()["authors"] == [user.username]
    assert response.json()["invited_authors"] == [other_user.username]


# ---------------------------------------------------------------- lineage


def test_lineage_cycle_is_rejected(api, make_finding):
    a = make_finding(title="A")
    b = make_finding(title="B", builds_on=[a])
    c = make_finding(title="C", builds_on=[b])
    before = counts()
    assert_error(api.patch(detail(a.pk), {"builds_on": [c.pk]}, format="json"), 400, "builds_on")
    assert_error(api.patch(detail(a.pk), {"builds_on": [a.pk]}, format="json"), 400, "builds_on")
    assert_error(api.patch(detail(a.pk), {"title": "A2", "builds_on": [b.pk]}, format="json"), 400, "builds_on")
    assert counts() == before
    a.refresh_from_db()
    assert a.title == "A" and not a.builds_on.exists()
    # a diamond is not a cycle
    d = make_finding(title="D", builds_on=[a])
    assert api.patch(detail(c.pk), {"builds_on": [b.pk, d.pk]}, format="json").status_code == 200


def test_lineage_endpoint(anon, make_finding):
    a = make_finding(title="Theory")
    b = make_finding(title="Fix", builds_on=[a])
    c = make_finding(title="Follow-up", builds_on=[b])
    other = make_finding(title="Sibling", builds_on=[a])
    assert anon.get(f"{detail(b.pk)}lineage/").json() == {"finding": b.pk, "ancestors": [a.pk], "descendants": [c.pk]}
    body = anon.get(f"{detail(a.pk)}lineage/").json()
    assert body == {"finding": a.pk, "ancestors": [], "descendants": sorted([b.pk, c.pk, other.pk])}
    assert anon.get(f"{detail(c.pk)}lineage/").json()["ancestors"] == sorted([a.pk, b.pk])


# ---------------------------------------------------------------- restricted visibility


@pytest.fixture
def reader(db):
    return UserFactory()


@pytest.fixture
def restricted(make_finding, reader, other_user):
    from registry.findings.services import author_invitation_accept

    finding = make_finding(
        title="Dual-use result", visibility="restricted", restricted_to=[reader], authors=[other_user]
    )
    author_invitation_accept(finding=finding, user=other_user, username=other_user.username)
    return finding


def test_restricted_finding_is_hidden_from_others(client_for, anon, restricted):
    stranger = client_for(UserFactory())
    for client in (anon, stranger):
        assert_error(client.get(detail(restricted.pk)), 404)
        assert restricted.pk not in _ids(client)
        assert_error(client.get(f"{detail(restricted.pk)}lineage/"), 404)
        assert_error(client.get(f"{detail(restricted.pk)}claims/"), 404)
    assert_error(stranger.patch(detail(restricted.pk), {"title": "x"}, format="json"), 404)


def test_builds_on_a_hidden_finding_answers_like_an_absent_one(client_for, anon, reader, make_finding, restricted):
    child = make_finding(title="A public follow-up", builds_on=[restricted])
    absent = restricted.pk + 10_000
    for client in (anon, client_for(UserFactory())):
        hidden = client.get(f"/api/v1/findings/?builds_on={restricted.pk}")
        missing = client.get(f"/api/v1/findings/?builds_on={absent}")
        assert hidden.status_code == missing.status_code == 200
        assert hidden.json() == missing.json() and hidden.json()["count"] == 0
    # whoever may see the parent finds the child
    seen = client_for(reader).get(f"/api/v1/findings/?builds_on={restricted.pk}").json()["results"]
    assert [f["id"] for f in seen] == [child.pk]


def test_restricted_finding_is_visible_to_readers_authors_and_staff(client_for, api, reader, other_user,
                                                                   staff_user, restricted):
    for client in (client_for(reader), api, client_for(other_user), client_for(staff_user)):
        assert client.get(detail(restricted.pk)).status_code == 200
        assert restricted.pk in _ids(client)
    # a reader may read but not edit
    assert_error(client_for(reader).patch(detail(restricted.pk), {"title": "x"}, format="json"), 403)


def test_restricted_finding_becomes_public_when_the_embargo_passes(anon, restricted):
    Finding.objects.filter(pk=restricted.pk).update(embargo_until=timezone.now() + timedelta(days=1))
    assert anon.get(detail(restricted.pk)).status_code == 404
    Finding.objects.filter(pk=restricted.pk).update(embargo_until=timezone.now() - timedelta(seconds=1))
    assert anon.get(detail(restricted.pk)).status_code == 200
    assert restricted.pk in _ids(anon)


def test_create_restricted_through_the_api(api, client_for, reader):
    response = api.post(
        FINDINGS,
        {"title": "Embargoed", "kind": "fix", "visibility": "restricted", "restricted_to": [reader.username],
         "embargo_until": (timezone.now() + timedelta(days=30)).isoformat()},
        format="json",
    )
    assert response.status_code == 201, response.json()
    finding_id = response.json()["id"]
    assert response.json()["restricted_to"] == [reader.username]
    assert client_for(reader).get(detail(finding_id)).status_code == 200
    assert client_for(UserFactory()).get(detail(finding_id)).status_code == 404


def test_restricted_to_requires_restricted_visibility(api):
    before = counts()
    response = api.post(FINDINGS, {"title": "x", "kind": "fix", "restricted_to": [UserFactory().username]},
                        format="json")
    assert_error(response, 400, "restricted_to")
    assert counts() == before


def test_restricted_children_do_not_leak_through_a_public_parent(anon, make_finding, other_user):
    parent = make_finding(title="Public parent")
    child = make_finding(owner=other_user, title="Secret child", visibility="restricted", builds_on=[parent])
    assert anon.get(f"{detail(parent.pk)}lineage/").json()["descendants"] == []
    assert child.pk not in anon.get(detail(parent.pk)).json()["built_upon_by"]


def test_cannot_build_on_a_finding_one_cannot_see(api, make_finding, other_user):
    secret = make_finding(owner=other_user, title="Secret", visibility="restricted")
    before = counts()
    response = api.post(FINDINGS, {"title": "Probe", "kind": "fix", "builds_on": [secret.pk]}, format="json")
    assert_error(response, 400, "builds_on")
    assert counts() == before


# ---------------------------------------------------------------- x-risk sheet


def test_xrisk_sheet_round_trip(api):
    sheet = {"expected_safety_effects": "Fewer artifacts", "expected_capability_effects": "None",
             "hazards": "", "dual_use": False, "notes": "After Hendrycks & Mazeika 2022"}
    response = api.post(FINDINGS, {"title": "Sheet", "kind": "fix", "xrisk_sheet": sheet}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["xrisk_sheet"] == sheet
    assert Finding.objects.get(pk=response.json()["id"]).xrisk_sheet == sheet


def test_xrisk_sheet_unknown_key_is_rejected_by_name(api, finding):
    before = counts()
    response = api.post(FINDINGS, {"title": "Sheet", "kind": "fix", "xrisk_sheet": {"danger_level": 9}},
                        format="json")
    body = assert_error(response, 400, "xrisk_sheet")
    assert "danger_level" in body["detail"]
    assert counts() == before
    response = api.patch(detail(finding.pk), {"xrisk_sheet": {"hazards": "x", "bogus_key": 1}}, format="json")
    assert "bogus_key" in assert_error(response, 400, "xrisk_sheet")["detail"]
    assert Finding.objects.get(pk=finding.pk).xrisk_sheet is None


def test_xrisk_sheet_wrong_types(api):
    for sheet in ({"dual_use": "maybe"}, {"hazards": ["a"]}, "text", [1, 2]):
        response = api.post(FINDINGS, {"title": "Sheet", "kind": "fix", "xrisk_sheet": sheet}, format="json")
        assert_error(response, 400, "xrisk_sheet")
