"""Execute one run of a plugin: claim it, run it in a child process, write how it ended.

The plugin runs in a child process of its own (worker/sandbox.py: a fresh interpreter with a
scrubbed environment, a scratch directory, a memory limit, its own process group). This function,
in the Celery pool process, is the only part that talks to the database: it keeps the heartbeat
going, passes cancellation on, enforces the time limit (stop request, then SIGTERM, then SIGKILL)
and records what happened: succeeded, failed (the plugin's error and traceback, or the exit code
or signal of its process, the last lines it wrote), timed_out (only when the limit was reached)
or nothing when the run was cancelled. A run is never left ``running`` by this process.

A database error while writing a successful result is retried (back-off, up to RUN_SAVE_RETRY_S);
it never turns the run into a failure.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection

import registry
from registry.errors import ApplicationError
from registry.logcontext import with_run_context
from registry.reproductions import services
from registry.reproductions.models import Run
from worker.liveness import LivenessLock
from worker.sandbox import ChildRun, capture_environment, nvidia_smi_query

__all__ = ["capture_environment", "nvidia_smi_query", "run_execute", "save_with_retry"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
PROGRESS_WRITE_INTERVAL_S = 0.5
#: A running run's log (its last lines) is stored at most this often, when it changed, so the run
#: page shows it while the run goes on rather than only once it ended.
LOG_WRITE_INTERVAL_S = 2.0
_first_claim_logged = False
_batch_cap_logged = False


def save_with_retry(save: Callable[[], T], *, what: str, total_s: float | None = None) -> T:
    """Call ``save`` until it does not raise a database connection error: back-off 0.5, 1, 2...
    for up to ``total_s`` (RUN_SAVE_RETRY_S), closing the connection between tries so the next one
    reconnects. Other errors, and the last connection error, are raised.

    The tries are never further apart than RUN_HEARTBEAT_INTERVAL_S: once the database is back, the
    result is saved within a heartbeat interval, well before the reaper (which allows
    RUN_HEARTBEAT_TIMEOUT_S after it regains the database, see ``services.runs_reap``) would take
    the run for lost and requeue it."""
    budget = settings.RUN_SAVE_RETRY_S if total_s is None else total_s
    deadline = time.monotonic() + budget
    cap = max(0.05, float(settings.RUN_HEARTBEAT_INTERVAL_S))
    delay = min(0.5, cap)
    attempt = 1
    while True:
        try:
            return save()
        except (OperationalError, InterfaceError) as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.error("%s: database unavailable for %.0f s, giving up: %s", what, budget, exc)
                raise
            logger.warning("%s: database error on attempt %d, retrying in %.1f s: %s", what, attempt, delay, exc)
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is dropped anyway
                pass
            time.sleep(min(delay, remaining))
            delay, attempt = min(delay * 2, cap), attempt + 1


def _plugin_modules() -> list[str]:
    """The modules of the installed plugins: the zygote imports them once (worker/zygote.py)."""
    from plugins.registry import all_plugins

    try:
        return sorted({entry.experiment.__module__ for entry in all_plugins().values()
                       if entry.available and entry.experiment is not None})
    except Exception:  # noqa: BLE001 - the zygote then imports each plugin at its first run
        return []


def plugin_modules_declared() -> list[str]:
    """The modules the installed plugins' entry points name, without importing them (a pool
    process starts its zygote with them before importing the plugins itself)."""
    from importlib.metadata import entry_points

    from interp_registry.sdk import ENTRY_POINT_GROUP

    from plugins.registry import _allowed_from_settings, _extra_from_settings

    try:
        allowed = _allowed_from_settings()
        declared = [*entry_points(group=ENTRY_POINT_GROUP), *_extra_from_settings()]
        return sorted({ep.value.partition(":")[0].strip() for ep in declared if allowed is None or ep.name in allowed})
    except Exception:  # noqa: BLE001 - the zygote then imports each plugin at its first run
        return []


def _leftovers(
    child: ChildRun | None, arms: tuple[str, ...] | None
) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """What an ended child left, never raising: its artifacts (none when they are refused), its
    curves, and what was refused in words (for the run's logs)."""
    if child is None or child.process is None or child.process.returncode is None:
        return {}, [], ""
    notes: list[str] = []
    try:
        artifacts: dict[str, Any] = child.load_artifacts()
    except Exception as exc:  # noqa: BLE001 - ArtifactRefused, or files the plugin broke
        artifacts = {}
        notes.append(f"artifacts not kept: {exc}")
    try:
        series, refused = child.load_series(arms=arms)
        notes += refused
    except Exception as exc:  # noqa: BLE001
        series = []
        notes.append(f"curves not kept: {type(exc).__name__}: {exc}")
    return artifacts, series, "\n".join(f"[{note}]" for note in notes)


def _keep_cancelled(child: ChildRun | None, *, run_id: int, token: Any, arms: tuple[str, ...] | None) -> None:
    """A cancelled run's artifacts and curves so far are kept, marked cancelled (never failing the task)."""
    artifacts, series, _ = _leftovers(child, arms)
    if not artifacts and not series:
        return
    close_old_connections()
    try:
        save_with_retry(
            lambda: services.run_keep_partial(run_id=run_id, token=token, artifacts=artifacts, series=series),
            what=f"run {run_id}: keeping what the cancelled run left",
        )
    except (SoftTimeLimitExceeded, TimeLimitExceeded):
        raise  # the task's time is up: the caller records what is left
    except Exception:  # noqa: BLE001 - the run is cancelled either way
        logger.exception("run %s: could not keep what the cancelled run left", run_id)


def _record_failure(
    *, run_id: int, token: Any, state: str, error: str, tb: str = "", logs: str = "",
    environment: dict[str, Any] | None = None, child: ChildRun | None = None, arms: tuple[str, ...] | None = None,
) -> None:
    artifacts, series, notes = _leftovers(child, arms)  # kept, marked with the state
    if notes:
        logs = f"{logs}\n{notes}" if logs else notes
    close_old_connections()
    try:
        save_with_retry(
            lambda: services.run_fail(
                run_id=run_id, token=token, state=state, error=error, traceback=tb, logs=logs,
                environment=environment, artifacts=artifacts, series=series,
            ),
            what=f"run {run_id}: recording {state}",
        )
    except (OperationalError, InterfaceError, SoftTimeLimitExceeded, TimeLimitExceeded):
        raise
    except Exception:  # e.g. unstorable text: record the failure with the essentials only
        logger.exception("run %s: could not record the failure in full", run_id)
        services.run_fail(run_id=run_id, token=token, state=state, error=error[:1000])


def _supervise(
    child: ChildRun, *, runs: list[Claimed], time_limit: float, locks: Sequence[LivenessLock] = ()
) -> tuple[str | None, set[int]]:
    """Wait for the child while keeping each of its runs' heartbeat going; stop it on cancellation
    (of every run it trains) or at the time limit (stop request, SIGTERM after half the grace
    period, SIGKILL after all of it). Returns why it was stopped ("cancelled", "timeout") or None
    when it ended by itself, and the runs cancelled meanwhile (in a batch, a run cancelled alone
    does not stop the others)."""
    grace = max(0.0, float(settings.RUN_KILL_GRACE_S))
    interval = float(settings.RUN_HEARTBEAT_INTERVAL_S)
    deadline = child.started_at + time_limit
    reason: str | None = None
    stop_at: float | None = None
    cancelled: set[int] = set()
    started = time.monotonic()
    last_logs = started
    # each run's own clocks: one run's progress must not stand in for another's heartbeat
    last_beat = {run_id: started for run_id, _, _ in runs}
    last_progress = dict(last_beat)
    while child.wait(0.1) is None:
        now = time.monotonic()
        logs_due = now - last_logs >= LOG_WRITE_INTERVAL_S
        if logs_due:
            last_logs = now
        refreshed = False
        for member, (run_id, token, _run) in zip(child.members, runs, strict=True):
            if run_id in cancelled:
                continue
            logs = member.take_logs() if logs_due else None
            member_beat = now - last_beat[run_id] >= interval or logs is not None
            # a due heartbeat carries the latest progress too (else a short interval would starve it)
            progress_due = member_beat or now - last_progress[run_id] >= PROGRESS_WRITE_INTERVAL_S
            progress = member.take_progress() if progress_due else None
            if progress is None and not member_beat:
                continue
            last_beat[run_id] = last_progress[run_id] = now
            if not refreshed:
                refreshed = True
                for lock in locks:
                    lock.refresh()  # re-taken after a lost connection (a database restart)
            fraction, message = progress or (None, None)
            try:
                state = services.run_heartbeat(run_id=run_id, token=token, progress=fraction, message=message,
                                               logs=logs)
            except Exception:  # a transient database error must not fail a healthy run
                logger.exception("run %s: could not record the heartbeat", run_id)
                connection.close()
                if logs is not None:
                    member.logs_changed = True  # not stored: the next heartbeat tries again
            else:
                if state != Run.State.RUNNING:
                    cancelled.add(run_id)
        if reason is None and len(cancelled) == len(runs):
            reason = "cancelled"
        if reason is None and now >= deadline:
            reason = "timeout"
        if reason is not None:
            if stop_at is None:
                stop_at = now
                child.request_stop()
            elif now >= stop_at + grace and "SIGKILL" not in child.signals_sent:
                child.kill_group(signal.SIGKILL)
            elif now >= stop_at + grace / 2 and "SIGTERM" not in child.signals_sent:
                child.kill_group(signal.SIGTERM)
    return reason, cancelled


def _how_it_ended(child: ChildRun, reason: str | None) -> str:
    _, words = child.exit_description()
    if reason and not child.signals_sent and child.stopped:
        return "the plugin stopped when asked"
    if reason and child.signals_sent:
        return f"{words} (after a stop request, then {', '.join(child.signals_sent)})"
    return words


#: A run this process executes: its id, this claim's token, the run as claimed.
Claimed = tuple[int, Any, Run]


def _batch_claim(
    run: Run, plugin: Any, host: str, *, time_limit_s: float, task_soft_limit_s: float | None
) -> list[Claimed]:
    """The other runs of ``run``'s reproduction this process trains with it as one batched model
    (RUN_BATCH_SEEDS, for a plugin with ``batched_seeds = True``); none otherwise. No more than
    the task's own soft time limit leaves time for (n x the run's limit, plus the margin), so
    Celery's backstop never cuts a batch the worker allows."""
    size = services.batch_seeds_allowed(plugin)
    if size <= 1:
        return []
    if task_soft_limit_s:
        allowed = services.runs_within_backstop(time_limit_s, task_soft_limit_s)
        if allowed < size:
            global _batch_cap_logged
            if not _batch_cap_logged:
                _batch_cap_logged = True
                logger.warning("run %s: its message's time limit (%s s) leaves time for %d run(s) together, not "
                               "RUN_BATCH_SEEDS=%d: set RUN_BATCH_SEEDS where runs are dispatched too",
                               run.pk, task_soft_limit_s, allowed, size)
            size = allowed
    if size <= 1:
        return []
    siblings = services.run_claim_batch(lead=run, limit=size - 1, worker_host=host)
    return [(sibling.pk, token, sibling) for token, sibling in siblings]


class _BatchHeartbeat:
    """While a batch's process ends and its results are saved one after another, a thread keeps
    the heartbeat of the runs not yet recorded (a slow save, a large artifact or the save's retries
    must not let the reaper or a redelivered message take them over). On its own connection."""

    def __init__(self, runs: list[Claimed]):
        self.pending = {run_id: token for run_id, token, _run in runs}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="batch-heartbeat", daemon=True)
        self.thread.start()

    def done(self, run_id: int) -> None:
        with self.lock:
            self.pending.pop(run_id, None)

    def _beat(self) -> None:
        interval = float(settings.RUN_HEARTBEAT_INTERVAL_S)
        try:
            while True:
                with self.lock:
                    pending = dict(self.pending)
                try:  # never waits on the row of a run whose save is in progress
                    services.runs_heartbeat_unlocked(pending)
                except Exception:  # noqa: BLE001 - the save's own retries deal with the database
                    logger.warning("runs %s: could not record the heartbeat", sorted(pending), exc_info=True)
                    connection.close()
                if self.stopped.wait(interval):
                    return
        finally:
            connection.close()  # this thread's own

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=30)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _conclude(
    member: ChildRun, claimed: Claimed, *, child: ChildRun, reason: str | None, cancelled_alone: bool, plugin: Any,
    experiment: Any, environment: dict[str, Any], time_limit: float,
) -> str:
    """Record how one of the process's runs ended (``member``: its view of the process); returns
    what happened. Raises only for a database that stayed away (the reaper then requeues it)."""
    run_id, token, run = claimed
    exit_fields, exit_words = child.exit_description()
    logs = member.logs()
    arms = tuple(plugin.arms)
    try:
        succeeded = member.has_result and child.process is not None and child.process.returncode == 0
        if cancelled_alone or (reason == "cancelled" and not succeeded):
            _keep_cancelled(member, run_id=run_id, token=token, arms=arms)
            return "stopped: the run was cancelled"
        if reason == "timeout" and not succeeded:
            error = f"exceeded the time limit of {_seconds(time_limit)} s; {_how_it_ended(child, reason)}"
            _record_failure(run_id=run_id, token=token, state=Run.State.TIMED_OUT, error=error, logs=logs,
                            environment=environment, child=member, arms=arms)
            return Run.State.TIMED_OUT
        if not succeeded:
            limit = child.memory_limit_mb
            tb = ""
            if member.error is not None:
                error, tb = member.error.get("error", ""), member.error.get("traceback", "")
                if limit and member.error.get("memory"):
                    error = f"memory limit of {limit} MiB exceeded ({error})"
            elif child.oom_killed():
                error = f"memory limit of {limit} MiB exceeded; {exit_words}"
            elif member.stopped:
                _keep_cancelled(member, run_id=run_id, token=token, arms=arms)
                return "stopped: the run was cancelled"
            elif exit_fields.get("exit_code") == 0:
                error = "the run's process exited without a result"
            else:
                error = exit_words
            _record_failure(run_id=run_id, token=token, state=Run.State.FAILED, error=error, tb=tb, logs=logs,
                            environment=environment, child=member, arms=arms)
            return Run.State.FAILED
        results, extra = member.load_results()
        environment.update(extra)
        rows = services.validate_results(plugin, results)  # a ValueError: the plugin's failure
        artifacts = member.load_artifacts()
        series, refused = member.load_series(arms=arms)
        if refused:
            logs = "\n".join([logs, *(f"[{note}]" for note in refused)])
        # A connection that died during a long run is replaced by save_with_retry (it retries on a
        # new connection); not closing a live one here saves a reconnect per run.
        stored = save_with_retry(
            lambda: services.run_succeed(
                run_id=run_id, token=token, rows=rows, artifacts=artifacts, environment=environment,
                hardware=str(environment.get("device_name", "cpu")), plugin_version=plugin.version, logs=logs,
                series=series, claimed=run,
            ),
            what=f"run {run_id}: saving the result",
        )
        return "succeeded" if stored else "discarded: the run was no longer ours"
    except (OperationalError, InterfaceError, SoftTimeLimitExceeded, TimeLimitExceeded):
        raise  # the caller's: the reaper's, or a timed-out task's
    except Exception as exc:  # noqa: BLE001 - the plugin's invalid result, a refused artifact...
        message = exc.message if isinstance(exc, ApplicationError) else f"{type(exc).__name__}: {exc}"
        _record_failure(run_id=run_id, token=token, state=Run.State.FAILED, error=message,
                        tb=traceback.format_exc(), logs=member.logs(), environment=environment, child=member,
                        arms=arms)
        return Run.State.FAILED


@with_run_context  # every log record written while the run executes carries its run_id
def run_execute(run_id: int, *, worker_host: str | None = None, task_soft_limit_s: float | None = None) -> str:
    """Claim and execute one run (with, for a plugin that trains seeds as one batched model and
    RUN_BATCH_SEEDS > 1, the other queued runs of its reproduction, in the same process). Returns
    what happened, for the task's log."""
    close_old_connections()
    host = worker_host or f"{socket.gethostname()}:{os.getpid()}"
    claimed = services.run_claim_loaded(run_id=run_id, worker_host=host)
    if claimed is None:
        return "skipped: the run is not queued (duplicate or late message)"
    token, run = claimed
    global _first_claim_logged
    if not _first_claim_logged:  # a replacement worker's start, as bench/soak.py measures it
        _first_claim_logged = True
        logger.info("run %s: the first run this process claimed", run_id)
    runs: list[Claimed] = [(run_id, token, run)]
    locks: list[LivenessLock] = []

    def hold_liveness(held_run_id: int) -> None:
        if settings.RUN_LIVENESS_LOCKS:
            lock = LivenessLock(held_run_id)
            locks.append(lock)
            lock.acquire()

    hold_liveness(run_id)
    child: ChildRun | None = None
    plugin: Any = None
    concluded: set[int] = set()
    environments: dict[int, dict[str, Any]] = {}
    heartbeat: _BatchHeartbeat | None = None
    started = time.monotonic()
    try:
        experiment = run.reproduction.experiment
        plugin = services.plugin_resolve(experiment.plugin)
        services._check_version_constraint(plugin, experiment.plugin_version_constraint)
        services.check_requested_version(plugin, run.requested_plugin_version)  # refused: the run fails, says why
        params = plugin.Params.model_validate(experiment.params)
        memory_limit_mb = experiment.memory_limit_mb
        if memory_limit_mb is None:
            memory_limit_mb = settings.RUN_MEMORY_LIMIT_MB
        for sibling in _batch_claim(run, plugin, host, time_limit_s=experiment.time_limit_s,
                                    task_soft_limit_s=task_soft_limit_s):
            runs.append(sibling)
            hold_liveness(sibling[0])
        size = len(runs)
        # a batch of n runs may take what n runs one after another may: n x the time and memory
        time_limit = float(experiment.time_limit_s) * size
        child = ChildRun(
            run_id=run_id,
            plugin=f"{plugin.__module__}:{plugin.__qualname__}",
            params=params.model_dump(mode="json"),
            seed=run.seed,
            device=run.reproduction.device,
            deterministic=settings.RUN_DETERMINISTIC,
            torch_threads=settings.RUN_TORCH_THREADS,
            memory_limit_mb=int(memory_limit_mb or 0) * size,
            scratch_root=settings.RUN_SCRATCH_DIR,
            cgroup_parent=settings.RUN_CGROUP_PARENT,
            env_passthrough=settings.RUN_ENV_PASSTHROUGH,
            max_artifact_bytes=settings.RUN_MAX_ARTIFACT_BYTES,
            max_artifacts_total_bytes=settings.RUN_MAX_ARTIFACTS_TOTAL_BYTES,
            max_checkpoint_bytes=settings.RUN_MAX_CHECKPOINT_BYTES,
            isolate_network=settings.RUN_ISOLATE_NETWORK,
            run_as_user=settings.RUN_AS_USER,
            start_method=settings.RUN_CHILD_START,
            preload=_plugin_modules(),
            batch=[(sibling.pk, sibling.seed) for _, _, sibling in runs[1:]],
        )
        child.start()
        reason, cancelled = _supervise(child, runs=runs, time_limit=time_limit, locks=locks)
        if size > 1:
            try:
                heartbeat = _BatchHeartbeat(runs)
            except RuntimeError:  # no thread can be started: the saves go on without it
                logger.warning("run %s: no heartbeat thread for the batch's saves", run_id, exc_info=True)
        child.finish()  # no process of the run is left after this; all its messages are read
        exit_fields, _ = child.exit_description()
        if child.zygote_error:
            logger.warning("run %s: started without the zygote: %s", run_id, child.zygote_error)
        outcomes: list[str] = []
        wall_time_s = round(time.monotonic() - started, 3)
        for member, claim in zip(child.members, runs, strict=True):
            environment = environments[claim[0]] = {
                **member.environment, "registry_version": registry.__version__, **exit_fields,
                "child_start_s": child.spawn_s, "child_started_by": child.started_by, "wall_time_s": wall_time_s,
            }
            # in a batch, a run cancelled while the others went on: its result is not recorded
            alone = size > 1 and claim[0] in cancelled and reason != "cancelled"
            if heartbeat is not None:  # its save locks its row: the thread's UPDATE would wait on it
                heartbeat.done(claim[0])
            outcomes.append(_conclude(
                member, claim, child=child, reason=reason, cancelled_alone=alone, plugin=plugin,
                experiment=experiment, environment=environment, time_limit=time_limit,
            ))
            concluded.add(claim[0])
        if size == 1:
            return outcomes[0]
        return f"a batch of {size} runs: " + "; ".join(
            f"run {claim[0]} {outcome}" for claim, outcome in zip(runs, outcomes, strict=True))
    except (OperationalError, InterfaceError):
        # the database stayed away for longer than RUN_SAVE_RETRY_S: the run stays running, and
        # the reaper requeues it once its heartbeat is stale; it is not the plugin's failure
        logger.exception("run %s: could not reach the database; leaving it to the reaper", run_id)
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure must be recorded
        wall_time_s = round(time.monotonic() - started, 3)
        state = Run.State.TIMED_OUT if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded) else Run.State.FAILED
        message = exc.message if isinstance(exc, ApplicationError) else f"{type(exc).__name__}: {exc}"
        members = child.members if child is not None else [None] * len(runs)
        for member, (claimed_id, claimed_token, _run) in zip(members, runs, strict=True):
            if claimed_id in concluded:
                continue
            environment = environments.get(claimed_id, {})  # as far as it was made
            environment.setdefault("wall_time_s", wall_time_s)
            _record_failure(
                run_id=claimed_id, token=claimed_token, state=state, error=message, tb=traceback.format_exc(),
                logs=member.logs() if member is not None else "", environment=environment, child=member,
                arms=tuple(plugin.arms) if plugin is not None else None,
            )
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return state
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if child is not None:
            child.finish()
            if sys.exc_info()[0] is None:
                _cleanup_later(child)
            else:  # the process may be on its way out (a shutdown): no thread would finish it
                child.cleanup()
        for lock in locks:
            lock.release()


#: Runs whose scratch directory a background thread is still removing (``cleanups_finish``).
_cleanups_pending: dict[int, ChildRun] = {}
_cleanups_lock = threading.Lock()


def _cleanup(child: ChildRun) -> None:
    try:
        child.cleanup()
    except Exception:  # noqa: BLE001 - a leftover directory must not fail anything
        logger.exception("run %s: could not remove its scratch directory", child.run_id)
    finally:
        with _cleanups_lock:
            _cleanups_pending.pop(id(child), None)


def _cleanup_later(child: ChildRun) -> None:
    """Remove the run's scratch directory (and cgroup) in the background: the run's outcome is
    recorded and none of its processes is left (``ChildRun.finish``), so nothing reads it again,
    and the worker takes its next run meanwhile. Where no thread can be started, at once. A pool
    process that exits finishes what is left first (``cleanups_finish``)."""
    with _cleanups_lock:
        _cleanups_pending[id(child)] = child
    try:
        _thread.start_new_thread(_cleanup, (child,))
    except RuntimeError:
        _cleanup(child)


def cleanups_finish() -> None:
    """Remove, here and now, the scratch directories whose background removal has not finished
    (a pool process about to exit: no thread survives it)."""
    with _cleanups_lock:
        left = list(_cleanups_pending.values())
    for child in left:
        _cleanup(child)
