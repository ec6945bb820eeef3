"""Co-authorship by consent (issue 10, item 7): a user named as an author by someone else is only
invited until they accept, and only accepted authors count as authors (edit rights, independence
of reproductions, display, ``?author=``). Only the invited user answers their own invitation."""

from __future__ import annotations

import importlib

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from registry.effects.models import FindingEffects
from registry.events.models import Event
from registry.findings import services
from registry.findings.models import Finding, FindingAuthor
from tests.api.helpers import assert_error
from tests.effects.builders import RISK_DOWN, experiment_for, recompute, reproduction
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

FINDINGS = "/api/v1/findings/"
INVITATIONS = "/api/v1/me/invitations/"


def detail(pk: int) -> str:
    return f"{FINDINGS}{pk}/"


def answer(pk: int, username: str, verb: str) -> str:
    return f"{FINDINGS}{pk}/authors/{username}/{verb}"


@pytest.fixture
def invitee(db):
    return UserFactory()


@pytest.fixture
def finding(user, invitee) -> Finding:
    """Created by ``user`` (an accepted author), naming ``invitee`` (invited only)."""
    return services.finding_create(user=user, title="Induction heads", kind="theory", authors=[invitee])


def status_of(finding: Finding, who) -> str | None:
    link = FindingAuthor.objects.filter(finding=finding, user=who).first()
    return link.status if link else None


# ---------------------------------------------------------------- invited is not an author


def test_the_creator_is_accepted_and_a_named_user_is_only_invited(finding, user, invitee):
    assert status_of(finding, user) == "accepted"
    assert status_of(finding, invitee) == "invited"
    assert list(finding.authors.all()) == [user]
    assert list(finding.invited_authors.all()) == [invitee]
    link = FindingAuthor.objects.get(finding=finding, user=invitee)
    assert link.invited_by == user and link.responded_at is None


def test_an_invited_user_cannot_edit(client_for, finding, invitee):
    client = client_for(invitee)
    assert_error(client.patch(detail(finding.pk), {"title": "Mine now"}, format="json"), 403)
    assert_error(client.delete(detail(finding.pk)), 403)
    assert not services.finding_can_edit(finding=finding, user=invitee)
    finding.refresh_from_db()
    assert finding.title == "Induction heads"


def test_an_invited_users_reproduction_still_counts_as_independent(finding, invitee):
    reproduction(experiment_for(finding), {"risk": RISK_DOWN}, user=invitee)
    assert "registry_independent" in recompute(finding)["evidence_rungs"]


def test_the_api_lists_accepted_authors_and_filters_on_them_only(api, anon, finding, user, invitee):
    body = api.get(detail(finding.pk)).json()
    assert body["authors"] == [user.username]
    assert body["invited_authors"] == [invitee.username]
    assert anon.get(f"{FINDINGS}?author={invitee.username}").json()["count"] == 0
    assert [f["id"] for f in anon.get(f"{FINDINGS}?author={user.username}").json()["results"]] == [finding.pk]


def test_the_dashboard_shows_accepted_authors_only(finding, user, invitee):
    from registry.dashboard.selectors import finding_detail

    names = finding_detail(finding=finding, user=AnonymousUser())["authors"]
    assert names == [user.get_username()]
    assert invitee.get_username() not in names


# ---------------------------------------------------------------- accept


def test_accept_makes_an_author(client_for, finding, invitee):
    client = client_for(invitee)
    assert client.get(INVITATIONS).json()[0]["finding"] == finding.pk
    response = client.post(answer(finding.pk, invitee.username, "accept"))
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "accepted" and response.json()["responded_at"]
    assert status_of(finding, invitee) == "accepted"
    assert client.get(INVITATIONS).json() == []
    assert sorted(client.get(detail(finding.pk)).json()["authors"]) == sorted(
        [finding.created_by.username, invitee.username]
    )
    # now an author: may edit
    assert client.patch(detail(finding.pk), {"title": "Edited"}, format="json").status_code == 200
    # accepting twice changes nothing
    assert client.post(answer(finding.pk, invitee.username, "accept")).status_code == 200
    assert Event.objects.filter(finding_id=finding.pk, type="finding.updated").exists()


def test_after_accepting_their_reproduction_is_no_longer_independent(finding, invitee):
    reproduction(experiment_for(finding), {"risk": RISK_DOWN}, user=invitee)
    assert "registry_independent" in recompute(finding)["evidence_rungs"]
    services.author_invitation_accept(finding=finding, user=invitee, username=invitee.username)
    assert "registry_independent" not in recompute(finding)["evidence_rungs"]


def test_accepting_and_withdrawing_request_an_effects_recompute(finding, invitee):
    services.author_invitation_accept(finding=finding, user=invitee, username=invitee.username)
    assert FindingEffects.objects.get(finding=finding).pending
    FindingEffects.objects.filter(finding=finding).update(pending=False)
    services.author_withdraw(finding=finding, user=invitee, username=invitee.username)
    assert FindingEffects.objects.get(finding=finding).pending


# ---------------------------------------------------------------- decline, withdraw


def test_decline(client_for, finding, invitee):
    client = client_for(invitee)
    response = client.post(answer(finding.pk, invitee.username, "decline"))
    assert response.status_code == 200 and response.json()["status"] == "declined"
    assert status_of(finding, invitee) == "declined"
    assert client.get(INVITATIONS).json() == []
    assert client.get(detail(finding.pk)).json()["invited_authors"] == []
    # a declined invitation cannot be accepted later (it takes a new invitation)
    assert_error(client.post(answer(finding.pk, invitee.username, "accept")), 403)
    assert_error(client.patch(detail(finding.pk), {"title": "x"}, format="json"), 403)


def test_withdraw(client_for, api, finding, user, invitee):
    client = client_for(invitee)
    assert client.post(answer(finding.pk, invitee.username, "accept")).status_code == 200
    response = client.post(answer(finding.pk, invitee.username, "withdraw"))
    assert response.status_code == 200 and response.json()["status"] == "declined"
    assert list(finding.authors.all()) == [user]
    assert_error(client.patch(detail(finding.pk), {"title": "x"}, format="json"), 403)
    # the last author cannot withdraw (the finding would have none)
    assert_error(api.post(answer(finding.pk, user.username, "withdraw")), 409, "authors")
    assert status_of(finding, user) == "accepted"


def test_an_invited_user_cannot_withdraw_and_an_author_cannot_decline(client_for, api, finding, user, invitee):
    assert_error(client_for(invitee).post(answer(finding.pk, invitee.username, "withdraw")), 403)
    assert_error(api.post(answer(finding.pk, user.username, "decline")), 409, "authors")


# ---------------------------------------------------------------- nobody answers for someone else


def test_nobody_answers_for_someone_else(client_for, anon, staff_user, user, finding, invitee):
    for verb in ("accept", "decline", "withdraw"):
        url = answer(finding.pk, invitee.username, verb)
        response = anon.post(url)
        assert response.status_code in (401, 403)
        # a signed-in stranger who can see the finding, its author, and staff: 403
        for who in (UserFactory(), user, staff_user):
            assert_error(client_for(who).post(url), 403)
    assert status_of(finding, invitee) == "invited"
    # a stranger's own name on a finding they are not invited to: 403
    stranger = UserFactory()
    assert_error(client_for(stranger).post(answer(finding.pk, stranger.username, "accept")), 403)
    assert status_of(finding, stranger) is None


def test_a_hidden_finding_is_a_404_for_a_stranger_and_readable_by_the_invitee(client_for, user, invitee):
    hidden = services.finding_create(
        user=user, title="Restricted", kind="fix", visibility="restricted", authors=[invitee]
    )
    stranger = UserFactory()
    for name in (invitee.username, stranger.username):
        assert_error(client_for(stranger).post(answer(hidden.pk, name, "accept")), 404)
    assert_error(client_for(stranger).get(detail(hidden.pk)), 404)
    # the invited user may read what they are asked to sign, and accept
    assert client_for(invitee).get(detail(hidden.pk)).status_code == 200
    assert client_for(invitee).post(answer(hidden.pk, invitee.username, "accept")).status_code == 200
    # a user who declined no longer sees it
    other = UserFactory()
    services.finding_update(finding=hidden, user=user, data={"authors": [invitee, other]})
    assert client_for(other).post(answer(hidden.pk, other.username, "decline")).status_code == 200
    assert_error(client_for(other).get(detail(hidden.pk)), 404)


def test_invitations_need_a_signed_in_user(anon):
    assert anon.get(INVITATIONS).status_code in (401, 403)


# ---------------------------------------------------------------- who sees pending invitations


def test_pending_invitations_are_hidden_from_strangers(client_for, anon, api, staff_user, finding, invitee):
    assert anon.get(detail(finding.pk)).json()["invited_authors"] == []
    assert client_for(UserFactory()).get(detail(finding.pk)).json()["invited_authors"] == []
    listed = anon.get(FINDINGS).json()["results"]
    assert [f["invited_authors"] for f in listed] == [[]]
    assert api.get(detail(finding.pk)).json()["invited_authors"] == [invitee.username]
    assert client_for(staff_user).get(detail(finding.pk)).json()["invited_authors"] == [invitee.username]
    # an invited user sees their own invitation only
    third = UserFactory()
    services.finding_update(finding=finding, user=finding.created_by, data={"authors": [invitee, third]})
    assert client_for(invitee).get(detail(finding.pk)).json()["invited_authors"] == [invitee.username]
    assert api.get(detail(finding.pk)).json()["invited_authors"] == sorted([invitee.username, third.username])


# ---------------------------------------------------------------- PATCH of authors


def test_patch_invites_new_names_and_removes_others(api, client_for, finding, user, invitee):
    accepted, newcomer = UserFactory(), UserFactory()
    services.finding_update(finding=finding, user=user, data={"authors": [invitee, accepted]})
    services.author_invitation_accept(finding=finding, user=accepted, username=accepted.username)
    response = api.patch(detail(finding.pk), {"authors": [accepted.username, newcomer.username]}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["authors"] == sorted([user.username, accepted.username])  # the creator is kept
    assert body["invited_authors"] == [newcomer.username]
    assert status_of(finding, invitee) is None  # removed
    assert status_of(finding, newcomer) == "invited"
    # removing an accepted author
    api.patch(detail(finding.pk), {"authors": []}, format="json")
    assert list(finding.authors.all()) == [user] and not finding.invited_authors.exists()
    assert_error(client_for(accepted).patch(detail(finding.pk), {"title": "x"}, format="json"), 403)


def test_patch_by_staff_invites_even_the_staff_member(client_for, staff_user, finding, user):
    response = client_for(staff_user).patch(detail(finding.pk), {"authors": [staff_user.username]}, format="json")
    assert response.status_code == 200
    assert response.json()["authors"] == [user.username]
    assert status_of(finding, staff_user) == "invited"


def test_patch_re_invites_a_user_who_declined(api, client_for, finding, invitee):
    services.author_invitation_decline(finding=finding, user=invitee, username=invitee.username)
    api.patch(detail(finding.pk), {"authors": [invitee.username]}, format="json")
    assert status_of(finding, invitee) == "invited"
    assert client_for(invitee).get(INVITATIONS).json()[0]["finding"] == finding.pk


# ---------------------------------------------------------------- the migration


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_existing_authors_as_accepted():
    """Authors recorded before consent existed stay authors (``accepted``)."""
    before, after = ("findings", "0002_claim_threshold_unit_status"), ("findings", "0003_findingauthor_consent")
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    try:
        old = executor.loader.project_state([before]).apps
        User = old.get_model("auth", "User")
        OldFinding = old.get_model("findings", "Finding")
        creator = User.objects.create(username="creator-before-consent")
        coauthor = User.objects.create(username="coauthor-before-consent")
        finding = OldFinding.objects.create(title="Old", kind="fix", created_by=creator)
        finding.authors.set([creator, coauthor])
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate([after])
        new = executor.loader.project_state([after]).apps
        Link = new.get_model("findings", "FindingAuthor")
        rows = {link.user_id: link for link in Link.objects.filter(finding_id=finding.pk)}
        assert set(rows) == {creator.pk, coauthor.pk}
        assert {link.status for link in rows.values()} == {"accepted"}
        assert rows[coauthor.pk].invited_by_id == creator.pk and rows[creator.pk].invited_by_id is None
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


def test_the_migration_says_why_old_authors_are_accepted():
    module = importlib.import_module("registry.findings.migrations.0003_findingauthor_consent")
    assert "before consent existed" in " ".join(module.__doc__.split())
