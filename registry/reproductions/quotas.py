"""Per-user quotas on runs, enforced in the database.

Two caps per user (defaults in settings, raised per user by staff with a ``UserQuota`` row):

- ``active_runs``: runs queued or running at once (QUOTA_ACTIVE_RUNS);
- ``runs_per_day``: runs requested in any 24 hours, whatever became of them (QUOTA_RUNS_PER_DAY).

``quota_reserve`` is called inside the transaction that inserts the runs, after the request was
validated and before the insert: it locks the user's quota row (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite transactions are IMMEDIATE, hence already serialised), then counts, then lets
the caller insert. A second request of the same user waits on the lock until the first commits
(or rolls back) and then counts its runs: two requests at the cap cannot both pass.

Self-reported runs (``self_reported_run_record``) use no worker time and are never active: they
count against the daily cap only (they are rows and effects recomputes all the same).

Staff users get the same defaults; a staff user may raise anyone's caps, their own included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from registry.errors import ApplicationError
from registry.reproductions.models import Run, UserQuota

ACTIVE_RUNS = "active_runs"
RUNS_PER_DAY = "runs_per_day"
QUOTA_NAMES = (ACTIVE_RUNS, RUNS_PER_DAY)
DAY = timedelta(hours=24)
ACTIVE_STATES = (Run.State.QUEUED, Run.State.RUNNING)
_DESCRIPTIONS = {
    ACTIVE_RUNS: "runs queued or running at once",
    RUNS_PER_DAY: "runs requested in 24 hours",
}


class QuotaExceeded(ApplicationError):
    """A 429: the body names the quota, its limit, its current use and what was asked for; the
    response carries ``Retry-After`` (``headers``)."""

    def __init__(
        self, *, quota: str, limit: int, used: int, requested: int, retry_after: int, field: str | None = "seeds"
    ):
        message = (
            f"quota exceeded: {_DESCRIPTIONS[quota]} is limited to {limit}; {used} used, {requested} requested. "
            f"Retry in {retry_after} s, or ask staff to raise your quota"
        )
        super().__init__(
            message,
            field=field,
            status=429,
            extra={"quota": quota, "limit": limit, "used": used, "requested": requested, "retry_after": retry_after},
        )
        self.quota = quota
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


@dataclass(frozen=True)
class QuotaLimits:
    active_runs: int
    runs_per_day: int
    overridden: frozenset[str] = frozenset()


def _limits_from(row: UserQuota | None) -> QuotaLimits:
    values = {ACTIVE_RUNS: settings.QUOTA_ACTIVE_RUNS, RUNS_PER_DAY: settings.QUOTA_RUNS_PER_DAY}
    overridden = set()
    for name in QUOTA_NAMES:
        value = getattr(row, name, None) if row is not None else None
        if value is not None:
            values[name] = value
            overridden.add(name)
    return QuotaLimits(overridden=frozenset(overridden), **values)


def quota_limits(user: Any) -> QuotaLimits:
    """The user's caps: their ``UserQuota`` overrides, else the settings."""
    return _limits_from(UserQuota.objects.filter(user=user).first())


def _user_runs(user: Any):
    return Run.objects.filter(reproduction__requested_by=user)


def active_runs_used(user: Any) -> int:
    return _user_runs(user).filter(state__in=ACTIVE_STATES).count()


def runs_today_used(user: Any, *, now: Any = None) -> int:
    since = (now or timezone.now()) - DAY
    return _user_runs(user).filter(reproduction__created_at__gt=since).count()


def quota_usage(user: Any) -> dict[str, Any]:
    """Each cap with its limit, current use and whether staff set it for this user."""
    limits = quota_limits(user)
    used = {ACTIVE_RUNS: active_runs_used(user), RUNS_PER_DAY: runs_today_used(user)}
    return {
        name: {
            "limit": getattr(limits, name),
            "used": used[name],
            "default": getattr(settings, f"QUOTA_{name.upper()}"),
            "overridden": name in limits.overridden,
        }
        for name in QUOTA_NAMES
    }


def _daily_retry_after(user: Any, *, used: int, requested: int, limit: int, now: Any) -> int:
    """Seconds until enough of the window's runs age out for ``requested`` more to fit."""
    must_expire = used + requested - limit
    if must_expire > used:  # more than the cap itself: no wait is enough
        return int(DAY.total_seconds())
    created = (
        _user_runs(user).filter(reproduction__created_at__gt=now - DAY)
        .order_by("reproduction__created_at", "pk").values_list("reproduction__created_at", flat=True)
    )
    # ``used`` was counted by another query: runs deleted since (a finding deleted concurrently)
    # can leave fewer rows than that; then the whole window is the (safe) answer
    oldest_needed = created[must_expire - 1 : must_expire].first()
    if oldest_needed is None:
        return int(DAY.total_seconds())
    return max(1, math.ceil((oldest_needed + DAY - now).total_seconds()))


def _lock_quota_row(user: Any) -> UserQuota:
    """The user's quota row, locked until the caller's transaction ends: one ``SELECT ... FOR
    UPDATE`` once the row exists (every request after the user's first); on the first, an INSERT
    that waits for a concurrent insert of the same user to commit and then does nothing, and the
    locking read again."""
    row = UserQuota.objects.select_for_update().filter(user=user).first()
    if row is not None:
        return row
    UserQuota.objects.bulk_create([UserQuota(user=user)], ignore_conflicts=True)
    return UserQuota.objects.select_for_update().get(user=user)


def quota_reserve(
    *, user: Any, requested: int, field: str | None = "seeds", active: bool = True, already_inserted: int = 0
) -> None:
    """Check that ``user`` may create ``requested`` more runs (``active``: runs that will be queued)
    and hold the lock that lets no concurrent request of theirs count meanwhile. Must run in the
    transaction that inserts the runs; raises ``QuotaExceeded`` (429) beyond a cap.

    ``already_inserted``: how many of the ``requested`` runs this transaction inserted before the
    call (self-reported runs take the lock last, after their bulk insert, so that it is held for
    the count and the commit only); they are not counted twice. The counts stay correct: a
    concurrent request of the same user counts after this one commits, its runs included."""
    if not connection.in_atomic_block:
        raise RuntimeError("quota_reserve must run inside the transaction that creates the runs")
    limits = _limits_from(_lock_quota_row(user))
    now = timezone.now()
    if active:
        used = active_runs_used(user) - already_inserted
        if used + requested > limits.active_runs:
            raise QuotaExceeded(
                quota=ACTIVE_RUNS, limit=limits.active_runs, used=used, requested=requested,
                retry_after=settings.QUOTA_ACTIVE_RETRY_AFTER_S, field=field,
            )
    used = runs_today_used(user, now=now) - already_inserted
    if used + requested > limits.runs_per_day:
        raise QuotaExceeded(
            quota=RUNS_PER_DAY, limit=limits.runs_per_day, used=used, requested=requested, field=field,
            retry_after=_daily_retry_after(user, used=used, requested=requested, limit=limits.runs_per_day, now=now),
        )


_UNSET: Any = object()


@transaction.atomic
def quota_set(*, user: Any, by: Any, active_runs: int | None = _UNSET, runs_per_day: int | None = _UNSET) -> UserQuota:
    """Staff set (or with None reset to the default) a user's caps."""
    from registry.errors import PermissionDenied

    if not getattr(by, "is_staff", False):
        raise PermissionDenied("only staff may change a quota")
    row = _lock_quota_row(user)
    for name, value in ((ACTIVE_RUNS, active_runs), (RUNS_PER_DAY, runs_per_day)):
        if value is _UNSET:
            continue
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ApplicationError(f"{name} must be a non-negative integer or null", field=name)
        setattr(row, name, value)
    row.save()
    return row

