"""The findings API renders each finding directly from the lists ``finding_list(linked_visible="lists")``
prefetches (issue 11, reads at scale): the bytes must be exactly what DRF's generic
``ModelSerializer.to_representation`` gives (linked findings the reader may not see left out),
for every field and every reader, on the list and on the detail."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient, APIRequestFactory

from registry.api.serializers import FindingSerializer
from registry.effects.models import ClaimVerdict
from registry.findings.models import Claim, Finding, FindingAuthor, Tag
from registry.findings.services import finding_is_visible
from registry.reproductions.models import Experiment
from tests.factories import FindingFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def reference(finding_id: int, user) -> dict:
    """DRF's own rendering of a finding fetched afresh (no prefetch), as the serializer did before
    it rendered the fields itself."""
    request = APIRequestFactory().get("/api/v1/findings/")
    request.user = user
    serializer = FindingSerializer(context={"request": request})
    finding = Finding.objects.get(pk=finding_id)
    data = serializers.ModelSerializer.to_representation(serializer, finding)
    linked = [*finding.builds_on.all(), *finding.built_upon_by.all()]
    hidden = {f.pk for f in linked if not finding_is_visible(finding=f, user=user)}
    data["builds_on"] = [pk for pk in data["builds_on"] if pk not in hidden]
    data["built_upon_by"] = [pk for pk in data["built_upon_by"] if pk not in hidden]
    return data


@pytest.fixture
def registry_data() -> dict:
    author, invited, declined, reader, stranger = (UserFactory() for _ in range(5))
    staff = UserFactory(is_staff=True)
    base = FindingFactory(created_by=author, summary="# Base\n\nwith `code` and [a link](https://example.org)")
    secret = FindingFactory(created_by=author, visibility=Finding.Visibility.RESTRICTED, summary="")
    secret.restricted_to.set([reader, invited])
    embargoed = FindingFactory(
        created_by=author, visibility=Finding.Visibility.RESTRICTED,
        embargo_until=timezone.now() - timedelta(days=1),
    )
    rich = FindingFactory(
        created_by=author, references=["doi:10/1", "arXiv:2101.00001"], status=Finding.Status.REPRODUCED,
        xrisk_sheet={"hazards": "none known", "dual_use": True}, effects_stale=True,
        embargo_until=timezone.now() + timedelta(days=3),
        summary="| a | b |\n|---|---|\n| 1 | 2 |\n\n<script>x</script>",
    )
    rich.tags.set([Tag.objects.create(name="zeta"), Tag.objects.create(name="alpha")])
    rich.builds_on.set([base, secret, embargoed])
    FindingFactory(created_by=stranger, xrisk_sheet={}).builds_on.set([rich])
    secret.builds_on.set([rich])
    FindingAuthor.objects.create(finding=rich, user=invited, status=FindingAuthor.Status.INVITED)
    FindingAuthor.objects.create(finding=rich, user=declined, status=FindingAuthor.Status.DECLINED)
    FindingAuthor.objects.create(finding=rich, user=reader, status=FindingAuthor.Status.ACCEPTED)
    old = Claim.objects.create(finding=rich, metric="loss", direction="decrease", created_by=author,
                               min_relative_effect=0.5, is_current=False)
    ClaimVerdict.objects.create(claim=old, verdict=ClaimVerdict.Verdict.CONFIRMED, run_ids=[1, 2])
    Claim.objects.create(finding=rich, metric="loss", direction="decrease", created_by=author, supersedes=old,
                         version=2, statement="halves the loss", min_relative_effect=0.25)
    Claim.objects.create(finding=rich, metric="acc", direction="non_inferior", margin=0.1, created_by=author)
    Experiment.objects.create(finding=rich, plugin="echo", params={"n": 3, "x": [1.5]}, created_by=author,
                              label="plain", retracted_at=timezone.now(), retraction_reason="wrong seed")
    Experiment.objects.create(finding=rich, plugin="echo", params={}, created_by=author, device="gpu")
    return {"author": author, "invited": invited, "reader": reader, "stranger": stranger, "staff": staff,
            "rich": rich}


@pytest.mark.parametrize("who", ["anonymous", "stranger", "reader", "invited", "author", "staff"])
def test_list_and_detail_render_as_drf_would(registry_data: dict, who: str) -> None:
    from django.contrib.auth.models import AnonymousUser

    user = AnonymousUser() if who == "anonymous" else registry_data[who]
    client = APIClient()
    if who != "anonymous":
        client.force_authenticate(user)
    response = client.get("/api/v1/findings/?page_size=50")
    assert response.status_code == 200
    results = response.data["results"]
    assert len(results) >= 4  # the public ones at least
    expected = [reference(item["id"], user) for item in results]
    assert JSONRenderer().render(results) == JSONRenderer().render(expected)
    rich = next(item for item in results if item["id"] == registry_data["rich"].pk)
    # the fixture really has what is rendered (the comparison above is not of empty fields)
    assert rich["tags"] == ["alpha", "zeta"] and len(rich["claims"]) == 2 and len(rich["experiments"]) == 2
    assert rich["xrisk_sheet"] == {"hazards": "none known", "dual_use": True} and rich["embargo_until"]
    sees_invited = who not in ("anonymous", "stranger")  # authors (reader is one), staff, the invited user
    assert rich["invited_authors"] == ([registry_data["invited"].username] if sees_invited else [])
    assert len(rich["builds_on"]) == (3 if who in ("reader", "invited", "author", "staff") else 2)
    detail = client.get(f"/api/v1/findings/{rich['id']}/")
    assert detail.status_code == 200
    assert JSONRenderer().render(detail.data) == JSONRenderer().render(reference(rich["id"], user))
