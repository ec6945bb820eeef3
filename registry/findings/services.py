"""Writes on findings and claims. Views call these; they raise ApplicationError on bad input."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from interp_registry.sdk import BASELINE, Scale
from interp_registry.sdk import Metric as PluginMetric

from plugins.registry import all_plugins
from registry.effects import stats
from registry.effects.services import effects_recompute_request
from registry.errors import ApplicationError, PermissionDenied
from registry.events.services import event_emit
from registry.findings.models import Claim, Finding, FindingAuthor, Tag
from registry.reproductions.models import Experiment, Measurement, Run

UPDATABLE_FIELDS = ("title", "summary", "kind", "references", "visibility", "embargo_until", "xrisk_sheet")
MAX_RETRACTION_REASON_CHARS = 2000
# thresholds beyond these are vacuous or typos, not claims: an absolute change of more than 1e12
# metric units, a relative increase of more than a millionfold
MAX_ABSOLUTE_THRESHOLD = 1e12
MAX_RELATIVE_INCREASE = 1e6


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
    FindingAuthor.objects.create(
        finding=finding, user=user, status=FindingAuthor.Status.ACCEPTED, responded_at=finding.created_at
    )
    _invite(finding=finding, inviter=user, users=[u for u in (authors or []) if u.pk != user.pk])
    finding.tags.set(_tags(tags or []))
    finding.builds_on.set(builds_on or [])
    finding.restricted_to.set(restricted_to or [])
    event_emit(type="finding.created", finding_id=finding.pk, payload=_event_payload(finding))
    return finding


@transaction.atomic
def finding_update(*, finding: Finding, user: Any, data: dict[str, Any]) -> Finding:
    _ensure_can_edit(finding, user)
    if "authors" in data:
        # who counts as independent (the evidence rungs) depends on the authors; requested
        # before the finding is locked (the recompute's lock order)
        effects_recompute_request(finding_id=finding.pk)
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
        # a link to a finding this editor cannot see was never shown to them (the serializer hides
        # it, the dashboard's form cannot send it back): it stays
        wanted = list(data["builds_on"])
        wanted += [f for f in finding.builds_on.all()
                   if f not in wanted and not finding_is_visible(finding=f, user=user)]
        _check_lineage(finding, wanted)
        finding.builds_on.set(wanted)
        changed.append("builds_on")
    if "authors" in data:
        _authors_change(finding=finding, editor=user, users=data["authors"])
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


def _number(value: Any, field: str) -> float | None:
    """A claim threshold as a finite float (None stays None); booleans are refused (JSON true is
    not 1.0) and -0.0 is stored as 0.0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApplicationError(f"{field} must be a number, not {type(value).__name__}", field=field)
    value = float(value)
    if not math.isfinite(value):
        raise ApplicationError(f"{field} must be a finite number", field=field)
    return 0.0 if value == 0 else value


def _validate_claim(
    *, direction: str, min_relative_effect: float | None, margin: float | None
) -> tuple[float | None, float | None]:
    min_relative_effect = _number(min_relative_effect, "min_relative_effect")
    margin = _number(margin, "margin")
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


def _declared_metrics(finding: Finding, metric: str) -> list[PluginMetric]:
    """The declarations of ``metric`` by the plugins of the finding's experiments (by every
    installed plugin while it has none)."""
    entries = all_plugins()
    names = set(finding.experiments.values_list("plugin", flat=True))
    if not names:
        names = {name for name, entry in entries.items() if entry.available}
    declared = []
    for name in sorted(names):
        entry = entries.get(name)
        if entry and entry.available:
            declared.extend(m for m in entry.experiment.metrics if m.name == metric)
    return declared


def _baseline_values(finding: Finding, metric: str) -> list[float]:
    """The finding's measured baseline values of a metric (succeeded runs, experiments in force)."""
    return list(
        Measurement.objects.filter(
            run__reproduction__experiment__finding=finding,
            run__reproduction__experiment__retracted_at__isnull=True,
            run__state=Run.State.SUCCEEDED,
            arm=BASELINE,
            metric=metric,
            censored=False,
        ).values_list("value", flat=True)
    )


def _threshold_problem(
    *,
    finding: Finding,
    declared: list[PluginMetric],
    metric: str,
    direction: str,
    threshold_unit: str,
    min_relative_effect: float | None,
    margin: float | None,
    strict: bool,
) -> ApplicationError | None:
    """Why the threshold cannot be met or a claim in this unit cannot mean anything for these
    declarations of the metric (an error naming the field, saying what to claim instead); None if
    it can. ``strict``: every declaration must allow it (otherwise the rule of ``_refused``)."""
    if threshold_unit not in Claim.ThresholdUnit.values:
        return ApplicationError(
            f"threshold_unit must be one of {', '.join(Claim.ThresholdUnit.values)}", field="threshold_unit"
        )
    threshold, field = (margin, "margin") if direction == Claim.Direction.NON_INFERIOR else (
        min_relative_effect, "min_relative_effect"
    )
    threshold = threshold or 0.0
    if threshold_unit == Claim.ThresholdUnit.ABSOLUTE:
        if any(m.scale == Scale.PROPORTION for m in declared) and threshold > 1:
            return ApplicationError(
                f"{metric!r} is a proportion: an absolute threshold is a fraction (0.3 = 30 points), at most 1",
                field=field,
            )
        if threshold > MAX_ABSOLUTE_THRESHOLD:
            return ApplicationError(
                f"an absolute threshold above {MAX_ABSOLUTE_THRESHOLD:g} of {metric!r}'s units is no claim "
                f"({field} is in the metric's own units)",
                field=field,
            )
        absolute_problems = [stats.absolute_claim_problem(Scale(m.scale).value) for m in declared]
        if _refused(absolute_problems, finding, strict=strict):
            return ApplicationError(next(p for p in absolute_problems if p), field="threshold_unit")
        return None
    if direction == Claim.Direction.DECREASE and threshold >= 1:
        return ApplicationError(
            "a relative decrease of 100% or more is impossible (min_relative_effect must be below 1); "
            "claim an absolute decrease (threshold_unit 'absolute') to require a drop in the metric's units",
            field="min_relative_effect",
        )
    if direction == Claim.Direction.INCREASE and threshold > MAX_RELATIVE_INCREASE:
        return ApplicationError(
            f"a relative increase of more than {MAX_RELATIVE_INCREASE:g} (a millionfold) is no claim "
            "(min_relative_effect is a fraction of the baseline: 0.5 = at least 50% more)",
            field="min_relative_effect",
        )
    if direction == Claim.Direction.NON_INFERIOR and threshold >= 1:
        return ApplicationError(
            f"a relative margin m says {metric!r} is not worse by more than m of the baseline (0.05 = 5%); "
            "m must be below 1 (a margin of 100% or more allows any loss, so the claim could never fail)",
            field="margin",
        )
    baseline = _baseline_values(finding, metric) if any(m.scale == Scale.PROPORTION for m in declared) else []
    problems = [stats.relative_claim_problem(Scale(m.scale).value, baseline or None) for m in declared]
    if _refused(problems, finding, strict=strict):
        return ApplicationError(next(p for p in problems if p), field="threshold_unit")
    return None


def _check_threshold(
    *,
    finding: Finding,
    declared: list[PluginMetric],
    metric: str,
    direction: str,
    threshold_unit: str,
    min_relative_effect: float | None,
    margin: float | None,
) -> None:
    """Refuse thresholds the metric cannot meet or a relative claim cannot mean (a 400 naming the
    field, saying what to claim instead)."""
    problem = _threshold_problem(
        finding=finding, declared=declared, metric=metric, direction=direction, threshold_unit=threshold_unit,
        min_relative_effect=min_relative_effect, margin=margin, strict=False,
    )
    if problem is not None:
        raise problem


def claim_problem_for_metric(*, claim: Claim, declaration: PluginMetric) -> str | None:
    """Why ``claim`` could not be decided on a metric declared like this (a plugin's declaration of
    the claim's metric, e.g. of an experiment about to be added), by the rules a new claim is
    checked with; None if it can be."""
    problem = _threshold_problem(
        finding=claim.finding, declared=[declaration], metric=claim.metric, direction=claim.direction,
        threshold_unit=claim.threshold_unit, min_relative_effect=claim.min_relative_effect, margin=claim.margin,
        strict=True,
    )
    return None if problem is None else problem.message


def _refused(problems: list[str | None], finding: Finding, *, strict: bool = False) -> bool:
    """With experiments (or ``strict``), every plugin they use must allow the claim; before the
    first experiment, it stands if some installed plugin declaring the metric allows it (and each
    plugin added later is checked against it: ``claim_problem_for_metric``)."""
    if not any(problems):
        return False
    return True if strict or finding.experiments.exists() else all(problems)


def claim_has_evidence(claim: Claim) -> bool:
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
    threshold_unit: str = Claim.ThresholdUnit.RELATIVE,
    statement: str = "",
    supersedes: Claim | None = None,
) -> Claim:
    """Add a claim; with ``supersedes`` it is a new version of an earlier one (history kept). The
    finding's effects are recomputed after commit."""
    _ensure_can_edit(finding, user)
    declared = _declared_metrics(finding, metric)
    if not declared:
        raise ApplicationError(
            f"no plugin of this finding's experiments (or, with none yet, no installed plugin) "
            f"declares a metric called {metric!r}",
            field="metric",
        )
    min_relative_effect, margin = _validate_claim(
        direction=direction, min_relative_effect=min_relative_effect, margin=margin
    )
    _check_threshold(
        finding=finding, declared=declared, metric=metric, direction=direction, threshold_unit=threshold_unit,
        min_relative_effect=min_relative_effect, margin=margin,
    )
    effects_recompute_request(finding_id=finding.pk)  # first: before the superseded claim is locked
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
        threshold_unit=threshold_unit,
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
    """Edit a claim in place, allowed only while no run exists for its finding; the finding's
    effects are recomputed after commit."""
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
    threshold_unit = data.get("threshold_unit", claim.threshold_unit)
    _check_threshold(
        finding=claim.finding, declared=_declared_metrics(claim.finding, claim.metric), metric=claim.metric,
        direction=direction, threshold_unit=threshold_unit, min_relative_effect=effect, margin=margin,
    )
    effects_recompute_request(finding_id=claim.finding_id)
    claim.direction, claim.min_relative_effect, claim.margin = direction, effect, margin
    claim.threshold_unit = threshold_unit
    claim.statement = data.get("statement", claim.statement)
    claim.save()
    event_emit(
        type="claim.updated",
        finding_id=claim.finding_id,
        payload={"finding": claim.finding_id, "claim": claim.pk, "metric": claim.metric, "version": claim.version},
    )
    return claim


@transaction.atomic
def experiment_retract(*, experiment: Experiment, user: Any, reason: str | None) -> Experiment:
    """Retract an experiment: kept for the record (and shown as retracted), excluded from the
    finding's effects from the next recompute on, and never reproduced again."""
    _ensure_can_edit(experiment.finding, user)
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason:
        raise ApplicationError("say why the experiment is retracted", field="reason")
    if len(reason) > MAX_RETRACTION_REASON_CHARS:
        raise ApplicationError(f"reason must be at most {MAX_RETRACTION_REASON_CHARS} characters", field="reason")
    effects_recompute_request(finding_id=experiment.finding_id)
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.retracted_at is not None:
        raise ApplicationError("this experiment is already retracted", field="experiment")
    experiment.retracted_at = timezone.now()
    experiment.retraction_reason = reason
    experiment.save(update_fields=["retracted_at", "retraction_reason"])
    cancelled = _cancel_unfinished_runs(experiment)
    event_emit(
        type="experiment.retracted",
        finding_id=experiment.finding_id,
        plugin=experiment.plugin,
        payload={
            "finding": experiment.finding_id,
            "experiment": experiment.pk,
            "plugin": experiment.plugin,
            "reason": reason,
            "cancelled_runs": cancelled,
        },
    )
    return experiment


def _cancel_unfinished_runs(experiment: Experiment) -> list[int]:
    """A retracted experiment's queued or running runs can never count: cancel them (a running one
    stops at its next ``should_stop`` check)."""
    from registry.reproductions.services import run_event_emit, run_transition  # the layer above

    cancelled = []
    unfinished = Run.objects.filter(
        reproduction__experiment=experiment, state__in=(Run.State.QUEUED, Run.State.RUNNING)
    ).values_list("pk", flat=True)
    for run_id in list(unfinished):
        if run_transition(run_id=run_id, to_state=Run.State.CANCELLED, finished_at=timezone.now()):
            run_event_emit("run.finished", run_id, reason="experiment retracted")
            cancelled.append(run_id)
    return cancelled


def finding_is_visible(*, finding: Finding, user: Any) -> bool:
    if finding.visibility == Finding.Visibility.PUBLIC:
        return True
    if finding.embargo_until and finding.embargo_until <= timezone.now():
        return True
    if not getattr(user, "is_authenticated", False):
        return False
    return (
        user.is_staff
        or finding.author_links.filter(
            user=user, status__in=(FindingAuthor.Status.ACCEPTED, FindingAuthor.Status.INVITED)
        ).exists()
        or finding.restricted_to.filter(pk=user.pk).exists()
    )


# --- Co-authorship by consent --------------------------------------------------------------------
# A user named as an author by someone else is ``invited`` and counts as an author (edit rights,
# independence of reproductions, display, ``?author=``) only once they accept; only they can.


def _invite(*, finding: Finding, inviter: Any, users: list[Any]) -> list[Any]:
    """Invite these users (none of them already accepted or invited): a new row, or a declined
    one reopened. Returns the users invited."""
    invited = []
    existing = {link.user_id: link for link in FindingAuthor.objects.filter(finding=finding, user__in=users)}
    for user in {u.pk: u for u in users}.values():
        link = existing.get(user.pk)
        if link is None:
            FindingAuthor.objects.create(
                finding=finding, user=user, status=FindingAuthor.Status.INVITED, invited_by=inviter
            )
        elif link.status == FindingAuthor.Status.DECLINED:
            link.status, link.invited_by, link.responded_at = FindingAuthor.Status.INVITED, inviter, None
            link.created_at = timezone.now()
            link.save(update_fields=["status", "invited_by", "responded_at", "created_at"])
        else:
            continue
        invited.append(user)
    return invited


def _authors_change(*, finding: Finding, editor: Any, users: list[Any]) -> None:
    """PATCH of ``authors``: the names given are the finding's authors and invitations from now on.
    Accepted authors and pending invitations named again stay as they are; new names (and users
    who had declined) are invited, never added as authors; accepted or invited users left out are
    removed. The creator, while an accepted author, is always kept (as before consent)."""
    wanted = {u.pk for u in users}
    links = list(FindingAuthor.objects.select_for_update().filter(finding=finding))
    for link in links:
        if link.user_id in wanted or link.status == FindingAuthor.Status.DECLINED:
            continue
        if link.user_id == finding.created_by_id and link.status == FindingAuthor.Status.ACCEPTED:
            continue
        link.delete()
    _invite(finding=finding, inviter=editor, users=users)
    if not FindingAuthor.objects.filter(finding=finding, status=FindingAuthor.Status.ACCEPTED).exists():
        raise ApplicationError("a finding keeps at least one accepted author", field="authors")



def _own_link(*, finding: Finding, user: Any, username: str) -> FindingAuthor | None:
    """The caller's own authorship row on this finding; answering for someone else is refused."""
    if not getattr(user, "is_authenticated", False):
        raise PermissionDenied("sign in to answer an invitation")
    if user.get_username() != username:
        raise PermissionDenied("only the invited user can answer an invitation or withdraw their authorship")
    return FindingAuthor.objects.filter(finding=finding, user=user).first()


def _authors_changed_event(finding: Finding) -> None:
    finding = Finding.objects.get(pk=finding.pk)
    event_emit(
        type="finding.updated", finding_id=finding.pk, payload={**_event_payload(finding), "changed": ["authors"]}
    )


@transaction.atomic
def author_invitation_accept(*, finding: Finding, user: Any, username: str) -> FindingAuthor:
    """The invited user (``username``, who must be the caller: nobody accepts for someone else)
    becomes an author. Accepting again is a no-op. Their reproductions stop counting as
    independent, so the finding's effects are recomputed."""
    link = _own_link(finding=finding, user=user, username=username)
    if link is not None and link.status == FindingAuthor.Status.ACCEPTED:
        return link
    if link is None or link.status != FindingAuthor.Status.INVITED:
        raise PermissionDenied("you have no pending invitation to author this finding")
    effects_recompute_request(finding_id=finding.pk)  # first: the recompute's lock order
    link = FindingAuthor.objects.select_for_update().get(pk=link.pk)
    if link.status != FindingAuthor.Status.INVITED:
        raise ApplicationError("the invitation was answered or withdrawn meanwhile", field="authors", status=409)
    link.status, link.responded_at = FindingAuthor.Status.ACCEPTED, timezone.now()
    link.save(update_fields=["status", "responded_at"])
    _authors_changed_event(finding)
    return link


@transaction.atomic
def author_invitation_decline(*, finding: Finding, user: Any, username: str) -> FindingAuthor:
    """The invited user declines (only they can); declining again is a no-op. Nothing an author
    sees as authorship changes, so no recompute. An accepted author withdraws instead."""
    link = _own_link(finding=finding, user=user, username=username)
    if link is not None and link.status == FindingAuthor.Status.DECLINED:
        return link
    if link is not None and link.status == FindingAuthor.Status.ACCEPTED:
        raise ApplicationError(
            "you are an author of this finding; withdraw your authorship instead", field="authors", status=409
        )
    if link is None:
        raise PermissionDenied("you have no pending invitation to author this finding")
    updated = FindingAuthor.objects.filter(pk=link.pk, status=FindingAuthor.Status.INVITED).update(
        status=FindingAuthor.Status.DECLINED, responded_at=timezone.now()
    )
    if not updated:
        raise ApplicationError("the invitation was answered or withdrawn meanwhile", field="authors", status=409)
    link.refresh_from_db()
    return link


@transaction.atomic
def author_withdraw(*, finding: Finding, user: Any, username: str) -> FindingAuthor:
    """An accepted author withdraws their own authorship (recorded as declined; only they can,
    and not the last accepted author: delete the finding instead). Their reproductions count as
    independent again, so the finding's effects are recomputed."""
    link = _own_link(finding=finding, user=user, username=username)
    if link is None or link.status != FindingAuthor.Status.ACCEPTED:
        raise PermissionDenied("you are not an author of this finding")
    effects_recompute_request(finding_id=finding.pk)  # first: the recompute's lock order
    Finding.objects.select_for_update().filter(pk=finding.pk).first()  # serialise the last-author check
    link = FindingAuthor.objects.select_for_update().get(pk=link.pk)
    if link.status != FindingAuthor.Status.ACCEPTED:
        raise PermissionDenied("you are not an author of this finding")
    others = FindingAuthor.objects.filter(finding=finding, status=FindingAuthor.Status.ACCEPTED).exclude(pk=link.pk)
    if not others.exists():
        raise ApplicationError(
            "the last author cannot withdraw; delete the finding or invite a co-author first",
            field="authors",
            status=409,
        )
    link.status, link.responded_at = FindingAuthor.Status.DECLINED, timezone.now()
    link.save(update_fields=["status", "responded_at"])
    _authors_changed_event(finding)
    return link
