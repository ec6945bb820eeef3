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

The daily count costs the same whatever the user's runs today: each request adds its runs to the
user's row for the clock hour (``RunsRequestedHour``, ``runs_requested_record``, under the same
lock), and the count sums the window's whole hours from those rows and counts only the runs of its
first, partial hour one by one: what the user requested in one hour 23-24 hours ago, not all day.
A run deleted since stays counted until its hour becomes the window's partial first hour.
``manage.py quota_recount`` rebuilds the rows from the runs (after runs' times were edited by
hand, or after a rolling upgrade in which servers without the rows created runs).

Staff users get the same defaults; a staff user may raise anyone's caps, their own included.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, QuerySet
from django.db.models.functions import TruncHour
from django.utils import timezone

from registry.errors import ApplicationError
from registry.reproductions.models import Run, RunsRequestedHour, UserQuota

ACTIVE_RUNS = "active_runs"
RUNS_PER_DAY = "runs_per_day"
QUOTA_NAMES = (ACTIVE_RUNS, RUNS_PER_DAY)
DAY = timedelta(hours=24)
HOUR = timedelta(hours=1)
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


def _totals(*parts: tuple[QuerySet, str | None]) -> list[int]:
    """For each ``(queryset, column)`` the sum of that column over its rows (``None``: the number of
    rows), all in one statement: one round trip to the database for the quota's counts."""
    selects, params = [], []
    for queryset, column in parts:
        sql, part_params = queryset.order_by().values(column or "pk").query.sql_with_params()
        total = f"SUM({connection.ops.quote_name(column)})" if column else "COUNT(*)"
        selects.append(f"(SELECT COALESCE({total}, 0) FROM ({sql}) AS part)")
        params.extend(part_params)
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(selects), params)
        return [int(value) for value in cursor.fetchone()]


def _active_runs(user: Any) -> QuerySet:
    return _user_runs(user).filter(state__in=ACTIVE_STATES)


def active_runs_used(user: Any) -> int:
    return _active_runs(user).count()


def _hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _window(now: datetime) -> tuple[datetime, datetime]:
    """The 24-hour window's start and the start of its first whole clock hour."""
    since = now - DAY
    return since, _hour_of(since) + HOUR


def _runs_today_parts(user: Any, now: datetime) -> list[tuple[QuerySet, str | None]]:
    """The window's whole hours from the hourly rows; its first, partial hour run by run."""
    since, first_whole_hour = _window(now)
    return [
        (RunsRequestedHour.objects.filter(user=user, hour__gte=first_whole_hour), "runs"),
        (_user_runs(user).filter(reproduction__created_at__gt=since, reproduction__created_at__lt=first_whole_hour),
         None),
    ]


def runs_today_used(user: Any, *, now: Any = None) -> int:
    """Runs the user requested in the last 24 hours (at most an hour of them counted one by one)."""
    return sum(_totals(*_runs_today_parts(user, now or timezone.now())))


def runs_requested_record(*, user: Any, runs_at: Iterable[tuple[datetime, int]]) -> None:
    """Add runs just inserted (``(their reproduction's created_at, how many)``) to the user's hourly
    rows. Called in the transaction that inserted them, after ``quota_reserve`` (whose lock on the
    user's quota row makes the read-then-write safe); as one of the user's new hours starts, their
    rows that left the window are deleted (a user who stops requesting keeps at most a day of rows)."""
    if not connection.in_atomic_block:
        raise RuntimeError("runs_requested_record must run inside the transaction that creates the runs")
    by_hour: Counter[datetime] = Counter()
    for at, runs in runs_at:
        by_hour[_hour_of(at)] += runs
    new_hour = False
    for hour, runs in by_hour.items():
        if runs and not RunsRequestedHour.objects.filter(user=user, hour=hour).update(runs=F("runs") + runs):
            RunsRequestedHour.objects.create(user=user, hour=hour, runs=runs)
            new_hour = True
    if new_hour:
        RunsRequestedHour.objects.filter(user=user, hour__lt=_hour_of(timezone.now() - DAY)).delete()


def runs_requested_rebuild(*, users: Iterable[Any] | None = None, now: datetime | None = None) -> int:
    """Recount the hourly rows of the last 24 hours from the runs themselves, for ``users`` (all
    users with runs in the window, or with rows, when None), each under their quota lock in a
    transaction of its own: safe while the registry serves. Runs deleted before it are no longer
    counted. Returns the rows written. ``manage.py quota_recount`` calls it."""
    start = _hour_of((now or timezone.now()) - DAY)
    if users is None:
        user_ids = set(Run.objects.filter(reproduction__created_at__gte=start)
                       .values_list("reproduction__requested_by", flat=True).distinct())
        user_ids |= set(RunsRequestedHour.objects.values_list("user", flat=True).distinct())
        user_ids.discard(None)
    else:
        user_ids = {getattr(u, "pk", u) for u in users}
    written = 0
    for user_id in sorted(user_ids):
        with transaction.atomic():
            _lock_quota_row(user_id)
            counts = list(
                Run.objects.filter(reproduction__requested_by=user_id, reproduction__created_at__gte=start)
                .annotate(hour=TruncHour("reproduction__created_at", tzinfo=UTC))
                .values("hour").annotate(runs=Count("pk")).order_by()
            )
            RunsRequestedHour.objects.filter(user=user_id).delete()
            written += len(RunsRequestedHour.objects.bulk_create(
                [RunsRequestedHour(user_id=user_id, hour=c["hour"], runs=c["runs"]) for c in counts]
            ))
    return written


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


def _daily_retry_after(
    user: Any, *, used: int, requested: int, limit: int, now: Any, partial_hour_runs: int
) -> int:
    """Seconds until enough of the window's runs age out for ``requested`` more to fit: the
    partial first hour's runs (``partial_hour_runs`` of them, as counted with ``used``) one by
    one, then the hourly rows in order; within the hour that frees enough, its runs' own times.
    Never early: where runs of that hour were deleted, a surviving run's time (as late or later)
    or the hour's end. A row or two per query."""
    must_expire = used + requested - limit
    if must_expire > used:  # more than the cap itself: no wait is enough
        return int(DAY.total_seconds())
    since, first_whole_hour = _window(now)

    def nth_oldest(start: datetime, end: datetime, n: int) -> datetime | None:
        return (
            _user_runs(user).filter(reproduction__created_at__gt=start, reproduction__created_at__lt=end)
            .order_by("reproduction__created_at", "pk").values_list("reproduction__created_at", flat=True)[n - 1:n]
            .first()
        )

    leaves_at = None
    if (oldest := nth_oldest(since, first_whole_hour, must_expire)) is not None:
        leaves_at = oldest + DAY
    else:
        remaining = must_expire - partial_hour_runs
        for hour, runs in RunsRequestedHour.objects.filter(user=user, hour__gte=first_whole_hour).order_by("hour") \
                .values_list("hour", "runs"):
            if remaining > runs:
                remaining -= runs
                continue
            # ``hour - 1 µs``: nth_oldest's lower bound is exclusive; without the run (deleted),
            # by the hour's end (now, for the current hour) they have all been requested
            survivor = nth_oldest(hour - timedelta(microseconds=1), hour + HOUR, remaining)
            leaves_at = (survivor or min(hour + HOUR, now)) + DAY
            break
    if leaves_at is None:  # fewer runs than counted (a concurrent recount): the whole window is safe
        return int(DAY.total_seconds())
    return max(1, math.ceil((leaves_at - now).total_seconds()))


def _lock_quota_row(user: Any) -> UserQuota:
    """The user's quota row (``user``: a user or their primary key), locked until the caller's
    transaction ends: one ``SELECT ... FOR UPDATE`` once the row exists (every request after the
    user's first); on the first, an INSERT that waits for a concurrent insert of the same user to
    commit and then does nothing, and the locking read again."""
    row = UserQuota.objects.select_for_update().filter(user=user).first()
    if row is not None:
        return row
    UserQuota.objects.bulk_create([UserQuota(user_id=getattr(user, "pk", user))], ignore_conflicts=True)
    return UserQuota.objects.select_for_update().get(user=user)


def quota_reserve(*, user: Any, requested: int, field: str | None = "seeds", active: bool = True) -> None:
    """Check that ``user`` may create ``requested`` more runs (``active``: runs that will be queued)
    and hold the lock that lets no concurrent request of theirs count meanwhile. Must run in the
    transaction that inserts the runs; raises ``QuotaExceeded`` (429) beyond a cap.

    It may come before the runs' insert or after it (self-reported runs take the lock last, after
    their bulk insert, so that it is held for the count and the commit only): the transaction's own
    runs are in neither count (not active; not yet in the hourly rows, and not in the window's
    partial first hour). The counts stay correct: a concurrent request of the same user counts
    after this one commits, its runs included.

    The caller then adds the runs it inserted to the hourly rows (``runs_requested_record``) in
    the same transaction, still under the lock."""
    if not connection.in_atomic_block:
        raise RuntimeError("quota_reserve must run inside the transaction that creates the runs")
    limits = _limits_from(_lock_quota_row(user))
    now = timezone.now()
    # one statement: the window's whole hours, its partial first hour, and (``active``) the active runs
    whole_hours, partial_hour, *active_used = _totals(
        *_runs_today_parts(user, now), *([(_active_runs(user), None)] if active else [])
    )
    if active:
        used = active_used[0]
        if used + requested > limits.active_runs:
            raise QuotaExceeded(
                quota=ACTIVE_RUNS, limit=limits.active_runs, used=used, requested=requested,
                retry_after=settings.QUOTA_ACTIVE_RETRY_AFTER_S, field=field,
            )
    used = whole_hours + partial_hour
    if used + requested > limits.runs_per_day:
        raise QuotaExceeded(
            quota=RUNS_PER_DAY, limit=limits.runs_per_day, used=used, requested=requested, field=field,
            retry_after=_daily_retry_after(user, used=used, requested=requested, limit=limits.runs_per_day, now=now,
                                           partial_hour_runs=partial_hour),
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

