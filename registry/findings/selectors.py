from __future__ import annotations

import re
from typing import Any

from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db import connections
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet, Value
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


def finding_list(*, user: Any, linked_visible: bool | str = False) -> QuerySet[Finding]:
    """Findings this user may read: public ones, expired embargoes, and restricted ones shared with them.

    No join, no DISTINCT: the rules are EXISTS subqueries, so a page is an index walk in the
    list's order (``Finding(-created_at, -id)``) rather than a sort of every visible row. Callers
    that filter on a many-valued relation add ``.distinct()`` themselves (or use EXISTS).
    ``linked_visible``: prefetch ``builds_on`` and ``built_upon_by`` limited to what the user may
    see (each marked ``visible_to_reader``). ``linked_visible="lists"`` (the API): the same rows,
    linked findings likewise limited, as plain lists instead (see :data:`API_LISTS`).
    """
    visible = Q(visibility=Finding.Visibility.PUBLIC) | Q(embargo_until__lte=timezone.now())
    if getattr(user, "is_authenticated", False):
        if user.is_staff:
            visible = Q()
        else:
            # accepted authors, and users invited to be (they must read what they are asked to sign)
            visible |= Q(
                Exists(
                    FindingAuthor.objects.filter(
                        finding=OuterRef("pk"),
                        user=user,
                        status__in=(FindingAuthor.Status.ACCEPTED, FindingAuthor.Status.INVITED),
                    )
                )
            ) | Q(Exists(Finding.restricted_to.through.objects.filter(finding_id=OuterRef("pk"), user_id=user.pk)))
    findings = Finding.objects.filter(visible)
    if linked_visible == "lists":
        return findings.prefetch_related(*_api_list_prefetches(findings))
    linked: list[Any] = ["builds_on"]
    if linked_visible:
        # Only the linked findings this user may see, marked ``visible_to_reader`` (the API's
        # serializer then hides nothing with a query per link).
        seen = findings.annotate(visible_to_reader=Value(True))
        linked = [Prefetch("builds_on", queryset=seen), Prefetch("built_upon_by", queryset=seen)]
    return findings.prefetch_related(
        "tags",
        Prefetch("author_links", queryset=finding_author_links(), to_attr="named_authors"),
        *linked,
        Prefetch("claims", queryset=Claim.objects.select_related("verdict")),
    )


#: Where :func:`finding_list` (``linked_visible="lists"``) puts each finding's related rows, as
#: plain lists (``Prefetch(to_attr=...)``: no related manager nor filtered queryset built per
#: finding and relation, which cost the API's list more than its SQL): relation -> attribute.
API_LISTS = {
    "tags": "tag_list",
    "builds_on": "builds_on_list",
    "built_upon_by": "built_upon_by_list",
    "claims": "claim_list",
    "experiments": "experiment_list",
    "restricted_to": "restricted_to_list",
}


def _api_list_prefetches(findings: QuerySet[Finding]) -> list[Prefetch]:
    """The API serializer's related rows, as lists (:data:`API_LISTS`), with the columns it renders
    only; the linked findings limited to those the reader may see (``visible_to_reader``)."""
    from django.contrib.auth import get_user_model

    from registry.findings.models import Tag
    from registry.reproductions.models import Experiment

    users = get_user_model().objects.only("id", "username")
    seen = findings.only("id").annotate(visible_to_reader=Value(True))
    return [
        Prefetch("tags", queryset=Tag.objects.only("id", "name"), to_attr=API_LISTS["tags"]),
        Prefetch(
            "author_links",
            queryset=finding_author_links().only("id", "finding_id", "user_id", "status", "user__id", "user__username"),
            to_attr="named_authors",
        ),
        Prefetch("builds_on", queryset=seen, to_attr=API_LISTS["builds_on"]),
        Prefetch("built_upon_by", queryset=seen, to_attr=API_LISTS["built_upon_by"]),
        Prefetch(
            "claims",
            queryset=Claim.objects.select_related("verdict").defer(
                "verdict__run_ids", "verdict__evidence", "verdict__updated_at"
            ),
            to_attr=API_LISTS["claims"],
        ),
        Prefetch(
            "experiments",
            queryset=Experiment.objects.only(
                "id", "finding_id", "plugin", "label", "params", "default_seeds", "device", "retracted_at"
            ),
            to_attr=API_LISTS["experiments"],
        ),
        Prefetch("restricted_to", queryset=users, to_attr=API_LISTS["restricted_to"]),
    ]


#: A search term's words: letters, digits, underscores (what the ``simple`` text parser keeps).
_SEARCH_WORD = re.compile(r"\w+")
MAX_SEARCH_WORDS = 16
MAX_SEARCH_WORD_CHARS = 100


def finding_search_vector() -> SearchVector:
    """The words of title + summary; migration findings 0005 indexes exactly this (GIN)."""
    return SearchVector("title", "summary", config="simple")


def finding_search_filter(queryset: QuerySet[Finding], text: str) -> QuerySet[Finding]:
    """Findings whose title or summary has every word of ``text`` as the start of one of its
    words, any case ("induct head" matches "Induction heads"). On PostgreSQL a full-text match on
    the GIN index; on SQLite (the embedded default), or for a text with no word in it, the
    substring match ``icontains`` of the whole text."""
    words = [w.lower()[:MAX_SEARCH_WORD_CHARS] for w in _SEARCH_WORD.findall(text)][:MAX_SEARCH_WORDS]
    if not words or connections[queryset.db].vendor != "postgresql":
        return queryset.filter(Q(title__icontains=text) | Q(summary__icontains=text))
    query = SearchQuery(" & ".join(f"{word}:*" for word in words), search_type="raw", config="simple")
    return queryset.alias(search_words=finding_search_vector()).filter(search_words=query)


def finding_filter_tag(queryset: QuerySet[Finding], name: str) -> QuerySet[Finding]:
    """Findings with this tag (any case): an EXISTS, so no join that repeats a finding and no DISTINCT."""
    tagged = Finding.tags.through.objects.filter(finding_id=OuterRef("pk"), tag__name__iexact=name.strip())
    return queryset.filter(Exists(tagged))


def finding_filter_plugin(queryset: QuerySet[Finding], plugin: str) -> QuerySet[Finding]:
    """Findings with an experiment of this plugin (an EXISTS, as :func:`finding_filter_tag`)."""
    from registry.reproductions.models import Experiment

    return queryset.filter(Exists(Experiment.objects.filter(finding_id=OuterRef("pk"), plugin=plugin)))


def finding_lineage(*, finding: Finding, user: Any) -> dict[str, list[int]]:
    """Ancestors and descendants (transitively) of a finding, limited to what the user may see."""
    visible = finding_list(user=user)
    ancestors, _ = lineage_walk(finding, visible, up=True)
    descendants, _ = lineage_walk(finding, visible, up=False)
    return {"ancestors": sorted(ancestors), "descendants": sorted(descendants)}


def lineage_walk(finding: Finding, visible: QuerySet[Finding], *, up: bool) -> tuple[set[int], set[int]]:
    """(every visible finding reached, the direct ones) walking ``builds_on`` (``up``) or
    ``built_upon_by`` from ``finding``, never through a finding the reader may not see: one query
    per level of the lineage, whatever the number of findings on a level."""
    edges = Finding.builds_on.through.objects
    visible_ids = visible.order_by().values("pk")
    seen: set[int] = set()
    direct: set[int] = set()
    frontier = {finding.pk}
    while frontier:
        if up:
            level = edges.filter(from_finding_id__in=frontier, to_finding_id__in=visible_ids)
            found = set(level.values_list("to_finding_id", flat=True))
        else:
            level = edges.filter(to_finding_id__in=frontier, from_finding_id__in=visible_ids)
            found = set(level.values_list("from_finding_id", flat=True))
        if not seen:
            direct = set(found)
        frontier = found - seen
        seen |= frontier
    return seen, direct

