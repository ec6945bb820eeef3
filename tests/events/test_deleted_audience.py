"""``finding.deleted`` of a restricted finding reaches whoever could read it when it was deleted:
by finding_list's rule that includes users invited as co-authors (they read what they are asked to
sign), not those who declined."""

from __future__ import annotations

import pytest

from registry.findings.models import Finding
from registry.findings.services import author_invitation_decline, finding_create, finding_delete
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_invited_co_authors_receive_finding_deleted_declined_ones_do_not(client_for, user):
    invited, declined, stranger = UserFactory(), UserFactory(), UserFactory()
    target = finding_create(
        user=user, title="restricted", kind=Finding.Kind.THEORY, visibility=Finding.Visibility.RESTRICTED,
        authors=[invited, declined],
    )
    author_invitation_decline(finding=target, user=declined, username=declined.username)
    for who in (invited, user):  # both can read it before the deletion
        assert client_for(who).get(f"/api/v1/findings/{target.pk}/").status_code == 200
    target_id = target.pk
    finding_delete(finding=target, user=user)

    def deleted_seen_by(who) -> bool:
        response = client_for(who).get("/api/v1/events/?type=finding.deleted")
        assert response.status_code == 200, response.content
        return target_id in {event["finding"] for event in response.json()["events"]}

    assert deleted_seen_by(user) and deleted_seen_by(invited)
    assert not deleted_seen_by(declined) and not deleted_seen_by(stranger)
