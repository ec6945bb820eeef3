"""Writes on findings and claims. Views call these; they raise ApplicationError on bad input."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from registry.errors import ApplicationError, PermissionDenied
from registry.events.services import event_emit
from registry.findings.models import Claim, Finding, Tag

UPDATABLE_FIELDS = ("title", "summary", "kind", "references", "visibility", "embargo_until", "xrisk_sheet")


def finding_can_edit(*, finding: Finding, user: Any) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    return bool(user.is_staff) or finding.authors.filter(pk=user.pk).exists()


def _ensure_can_edit(finding: Finding, user: Any) -> None:
    if not finding_can_edit(finding=finding, user=user):
        raise PermissionDenied("only the finding's authors or staff may change it")


def _tags(names: list[str]) -> list[Tag]:
    return [Tag.objects.get_or_create(name=name.strip().lower())[0] for name in names]


def _check_lineage(finding: Finding | None, parents: list[Finding]) -> None:
    """Refuse a builds_on link that would make the lineage graph cyclic."""
    if finding is None:
        return
    frontier = list(parents)
    seen: set[int] = set()
    while frontier:
        node = frontier.pop()
        if node.pk == finding.pk:
            raise ApplicationError("a finding cannot build on itself or on its descendants", field="builds_on")
        if node.pk in seen:
            continue
        seen.add(node.pk)
        frontier.extend(node.builds_on.all())


def _event_payload(finding: Finding) -> dict[str, Any]:
    return {"finding": finding.pk, "title": finding.title, "tags": [t.name for t in finding.tags.all()]}


@transaction.atomic
def finding_create(
    *,
    user: AbstractBaseUser,
    title: str,
    kind: str,
    summary: str = "",
    tags: list[str] | None = None,
    references: list[str] | None = None,
    builds_on: list[Finding] | None = None,
    authors: list[AbstractBaseUser] | None = None,
    visibility: str = Finding.Visibility.PUBLIC,
    restricted_to: list[AbstractBaseUser] | None = None,
    embargo_until: datetime | None = None,
    xrisk_sheet: dict | None = None,
) -> Finding:
    finding = Finding.objects.create(
        title=title,
        kind=kind,
        summary=summary,
        references=references or [],
        created_by=user,
        visibility=visibility,
        embargo_until=embargo_until,
        xrisk_sheet=xrisk_sheet,
    )
    finding.authors.set({user, *(authors or [])})
    finding.tags.set(_tags(tags or []))
    finding.builds_on.set(builds_on or [])
    finding.restricted_to.set(restricted_to or [])
    event_emit(type="finding.created", finding_id=finding.pk, payload=_event_payload(finding))
    return finding


@transaction.atomic
def finding_update(*, finding: Finding, user: Any, data: dict[str, Any]) -> Finding:
    _ensure_can_edit(finding, user)
    finding = Finding.objects.select_for_update().get(pk=finding.pk)
    changed = []
    for field in UPDATABLE_FIELDS:
        if field in data:
            setattr(finding, field, data[field])
            changed.append(field)
    finding.save()
    if "tags" in data:
        finding.tags.set(_tags(data["tags"]))
        changed.append("tags")
    if "builds_on" in data:
        _check_lineage(finding, data["builds_on"])
        finding.builds_on.set(data["builds_on"])
        changed.append("builds_on")
    if "authors" in data:
        finding.authors.set({finding.created_by, *data["authors"]})
        changed.append("authors")
    if "restricted_to" in data:
        finding.restricted_to.set(data["restricted_to"])
        changed.append("restricted_to")
    event_emit(
        type="finding.updated", finding_id=finding.pk, payload={**_event_payload(finding), "changed": changed}
    )
    return finding


@transaction.atomic
def finding_delete(*, finding: Finding, user: Any) -> None:
    _ensure_can_edit(finding, user)
    event_emit(type="finding.deleted", finding_id=finding.pk, payload=_event_payload(finding))
    finding.delete()


def _validate_claim(
    *, direction: str, min_relative_effect: float | None, margin: float | None
) -> tuple[float | None, float | None]:
    if direction == Claim.Direction.NON_INFERIOR:
        if margin is None:
            raise ApplicationError("a non_inferior claim needs a margin", field="margin")
        if margin < 0:
            raise ApplicationError("margin must be zero or positive", field="margin")
        return None, margin
    if margin is not None:
        raise ApplicationError("margin only applies to non_inferior claims", field="margin")
    effect = 0.0 if min_relative_effect is None else min_relative_effect
    if effect < 0:
        raise ApplicationError(
            "min_relative_effect is a magnitude (0.9 = at least 90%); the direction gives the sign",
            field="min_relative_effect",
        )
    return effect, None


def claim_has_evidence(claim: Claim) -> bool:
    from registry.reproductions.models import Run

    return Run.objects.filter(reproduction__experiment__finding=claim.finding_id).exists()


@transaction.atomic
def claim_create(
    *,
    finding: Finding,
    user: Any,
    metric: str,
    direction: str,
    min_relative_effect: float | None = None,
    margin: float | None = None,
    statement: str = "",
    supersedes: Claim | None = None,
) -> Claim:
    """Add a claim; with ``supersedes`` it is a new version of an earlier one (history kept)."""
    from registry.reproductions.services import metric_known_for_finding

    _ensure_can_edit(finding, user)
    if not metric_known_for_finding(finding=finding, metric=metric):
        raise ApplicationError(
            f"no plugin of this finding's experiments (or, with none yet, no installed plugin) "
            f"declares a metric called {metric!r}",
            field="metric",
        )
    min_relative_effect, margin = _validate_claim(
        direction=direction, min_relative_effect=min_relative_effect, margin=margin
    )
    version = 1
    if supersedes is not None:
        supersedes = Claim.objects.select_for_update().get(pk=supersedes.pk)
        if supersedes.finding_id != finding.pk:
            raise ApplicationError("the superseded claim belongs to another finding", field="supersedes")
        if not supersedes.is_current:
            raise ApplicationError("that claim was already superseded", field="supersedes")
        supersedes.is_current = False
        supersedes.save(update_fields=["is_current"])
        version = supersedes.version + 1
    claim = Claim.objects.create(
        finding=finding,
        metric=metric,
        direction=direction,
        min_relative_effect=min_relative_effect,
        margin=margin,
        statement=statement,
        version=version,
        supersedes=supersedes,
        created_by=user,
    )
    event_emit(
        type="claim.created",
        finding_id=finding.pk,
        payload={"finding": finding.pk, "claim": claim.pk, "metric": metric, "version": version},
    )
    return claim


@transaction.atomic
def claim_update(*, claim: Claim, user: Any, data: dict[str, Any]) -> Claim:
    """Edit a claim in place, allowed only while no run exists for its finding."""
    _ensure_can_edit(claim.finding, user)
    if not claim.is_current:
        raise ApplicationError(
            "this version was superseded; its history is fixed (edit the current version)",
            field="claim",
            status=409,
        )
    if claim_has_evidence(claim):
        raise ApplicationError(
            "this claim is fixed because reproductions exist; post a new claim with 'supersedes'",
            field="claim",
            status=409,
        )
    direction = data.get("direction", claim.direction)
    effect, margin = _validate_claim(
        direction=direction,
        min_relative_effect=data.get("min_relative_effect", claim.min_relative_effect),
        margin=data.get("margin", claim.margin if direction == Claim.Direction.NON_INFERIOR else None),
    )
    claim.direction, claim.min_relative_effect, claim.margin = direction, effect, margin
    claim.statement = data.get("statement", claim.statement)
    claim.save()
    event_emit(
        type="claim.updated",
        finding_id=claim.finding_id,
        payload={"finding": claim.finding_id, "claim": claim.pk, "metric": claim.metric, "version": claim.version},
    )
    return claim


def finding_is_visible(*, finding: Finding, user: Any) -> bool:
    if finding.visibility == Finding.Visibility.PUBLIC:
        return True
    if finding.embargo_until and finding.embargo_until <= timezone.now():
        return True
    if not getattr(user, "is_authenticated", False):
        return False
    return (
        user.is_staff
        or finding.authors.filter(pk=user.pk).exists()
        or finding.restricted_to.filter(pk=user.pk).exists()
    )
