from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from registry.findings.models import Claim, Finding, FindingAuthor


def finding_author_links() -> QuerySet[FindingAuthor]:
    """Authorship rows that matter to readers: accepted and invited (declined ones are history)."""
    return FindingAuthor.objects.filter(
        status__in=(FindingAuthor.Status.ACCEPTED, FindingAuthor.Status.INVITED)
    ).select_related("user")


def finding_authors_split(finding: Finding) -> tuple[list[Any], list[Any]]:
    """(accepted authors, invited users) of a finding, from ``finding_list``'s prefetch when there."""
    links = getattr(finding, "named_authors", None)
    if links is None:
        links = list(finding_author_links().filter(finding=finding))
    accepted = [link.user for link in links if link.status == FindingAuthor.Status.ACCEPTED]
    invited = [link.user for link in links if link.status == FindingAuthor.Status.INVITED]
    return accepted, invited


def invitation_list(*, user: Any) -> QuerySet[FindingAuthor]:
    """This user's pending invitations to author a finding (none for an anonymous caller)."""
    if not getattr(user, "is_authenticated", False):
        return FindingAuthor.objects.none()
    return (
        FindingAuthor.objects.filter(user=user, status=FindingAuthor.Status.INVITED)
        .select_related("finding", "invited_by")
        .order_by("-created_at", "-id")
    )


def finding_list(*, user: Any) -> QuerySet[Finding]:
    """Findings this user may read: public ones, expired embargoes, and restricted ones shared with them."""
    visible = Q(visibility=Finding.Visibility.PUBLIC) | Q(embargo_until__lte=timezone.now())
    if getattr(user, "is_authenticated", False):
        if user.is_staff:
            visible = Q()
        else:
            # accepted authors, and users invited to be (they must read what they are asked to sign)
            visible |= Q(
                author_links__user=user,
                author_links__status__in=(FindingAuthor.Status.ACCEPTED, FindingAuthor.Status.INVITED),
            ) | Q(restricted_to=user)
    return (
        Finding.objects.filter(visible)
        .distinct()
        .prefetch_related(
            "tags",
            Prefetch("author_links", queryset=finding_author_links(), to_attr="named_authors"),
            "builds_on",
            Prefetch("claims", queryset=Claim.objects.select_related("verdict")),
        )
    )


def finding_lineage(*, finding: Finding, user: Any) -> dict[str, list[int]]:
    """Ancestors and descendants (transitively) of a finding, limited to what the user may see."""
    visible_ids = set(finding_list(user=user).values_list("id", flat=True))

    def walk(start: Finding, relation: str) -> list[int]:
        seen: set[int] = set()
        frontier = [start]
        while frontier:
            node = frontier.pop()
            for other in getattr(node, relation).all():
                # never walk through a finding the reader may not see
                if other.pk not in seen and other.pk in visible_ids:
                    seen.add(other.pk)
                    frontier.append(other)
        return sorted(seen)

    return {"ancestors": walk(finding, "builds_on"), "descendants": walk(finding, "built_upon_by")}
