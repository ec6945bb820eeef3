from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from registry.findings.models import Claim, Finding


def finding_list(*, user: Any) -> QuerySet[Finding]:
    """Findings this user may read: public ones, expired embargoes, and restricted ones shared with them."""
    visible = Q(visibility=Finding.Visibility.PUBLIC) | Q(embargo_until__lte=timezone.now())
    if getattr(user, "is_authenticated", False):
        if user.is_staff:
            visible = Q()
        else:
            visible |= Q(authors=user) | Q(restricted_to=user)
    return (
        Finding.objects.filter(visible)
        .distinct()
        .prefetch_related(
            "tags", "authors", "builds_on", Prefetch("claims", queryset=Claim.objects.select_related("verdict"))
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
