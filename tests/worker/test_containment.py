"""Containment of runs (worker/sandbox.py), through the real worker: each run executes in a child
process of its own, with a scrubbed environment, a scratch directory, a memory limit and its own
process group; the worker enforces the time limit and records truthfully how the run ended."""

from __future__ import annotations

import os
import re
import threading
import uuid

import pytest
from django.db import connection

from registry.events.models import Event
from registry.reproductions import services
from registry.reproductions.models import Experiment, Measurement, Reproduction, Run
from tests.conftest import wait_for
from tests.factories import FindingFactory
from worker.runner import save_with_retry

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]
worker = pytest.mark.worker
redis = pytest.mark.redis


def _run(user, kind: str, *, time_limit_s: int = 60, memory_limit_mb: int | None = None, **params) -> Run:
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(
        finding=finding, user=user, plugin="faulty", params={"kind": kind, **params}, reproduce=False,
        time_limit_s=time_limit_s,
    )
    if memory_limit_mb is not None:
        Experiment.objects.filter(pk=experiment.pk).update(memory_limit_mb=memory_limit_mb)
        experiment.refresh_from_db()
    return services.reproduction_request(experiment=experiment, user=user, seeds=[0]).runs.get()


def _finished(run: Run, timeout: float = 60) -> Run:
    wait_for(lambda: Run.objects.get(pk=run.pk).state not in ("queued", "running"), timeout=timeout)
    return Run.objects.get(pk=run.pk)


def _events(run: Run) -> int:
    return Event.objects.filter(type__startswith="run.", payload__run=run.pk).count()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@worker
@redis
def test_a_hanging_plugin_is_stopped_at_its_time_limit(celery_worker, user):
    run = _finished(_run(user, "hang", time_limit_s=2))
    assert run.state == "timed_out", (run.error, celery_worker.output()[-2000:])
    assert run.error.startswith("exceeded the time limit of 2 s")
    assert "SIGTERM" in run.error  # it ignored the stop request
    assert run.environment.get("exit_signal") in ("SIGTERM", "SIGKILL")
    assert (run.finished_at - run.started_at).total_seconds() < 2 + 2 + 6, (  # limit + grace + start-up
        {k: run.environment.get(k) for k in ("child_start_s", "child_started_by", "wall_time_s")}, run.logs[-1500:])
    assert "faulty: hang" in run.logs
    assert Measurement.objects.filter(run=run).count() == 0
    assert _events(run) == 2  # run.started, run.finished


@worker
@redis
def test_a_crashing_process_fails_within_seconds_with_its_exit_code(celery_worker, user):
    run = _finished(_run(user, "crash", seconds=1.0, time_limit_s=120), timeout=30)
    assert run.state == "failed", (run.error, celery_worker.output()[-2000:])
    assert run.error == "the run's process exited with code 3"
    assert run.environment["exit_code"] == 3
    assert "about to crash" in run.logs  # the process's own output is kept
    assert (run.finished_at - run.started_at).total_seconds() < 10
    assert Measurement.objects.filter(run=run).count() == 0
    assert _events(run) == 2


@worker
@redis
def test_a_raising_plugin_keeps_its_traceback(celery_worker, user):
    run = _finished(_run(user, "raise"))
    assert run.state == "failed"
    assert run.error == "RuntimeError: the faulty plugin raised"
    assert "Traceback" in run.traceback and "the faulty plugin raised" in run.traceback
    assert run.environment["exit_code"] == 1
    assert Measurement.objects.filter(run=run).count() == 0
    assert _events(run) == 2


@worker
@redis
def test_a_process_left_behind_is_killed_with_the_run(celery_worker, user):
    run = _finished(_run(user, "fork"))
    assert run.state == "succeeded", (run.error, celery_worker.output()[-2000:])
    pid = int(re.search(r"left pid (\d+) behind", run.logs).group(1))
    wait_for(lambda: not _alive(pid), timeout=5)
    assert Measurement.objects.filter(run=run).count() == 8
    assert _events(run) == 2


@worker
@redis
def test_the_memory_limit_fails_the_run_and_spares_its_neighbour(celery_worker, user):
    hog = _run(user, "hog", megabytes=1024, memory_limit_mb=256)
    neighbour = _run(user, "snoop")
    hog, neighbour = _finished(hog), _finished(neighbour)
    assert hog.state == "failed", (hog.error, celery_worker.output()[-2000:])
    assert hog.error.startswith("memory limit of 256 MiB exceeded")
    assert Measurement.objects.filter(run=hog).count() == 0
    assert _events(hog) == 2
    assert neighbour.state == "succeeded"
    assert Measurement.objects.filter(run=neighbour).count() == 8


@worker
@redis
def test_a_snooping_plugin_finds_no_secret_settings_or_database(celery_worker, user):
    run = _finished(_run(user, "snoop"))
    assert run.state == "succeeded", (run.error, celery_worker.output()[-2000:])
    found = {m.metric: m.value for m in Measurement.objects.filter(run=run, arm="baseline")}
    assert found == {"found_secret": 0.0, "found_settings": 0.0, "reached_database": 0.0, "wrote_app_dir": 0.0}
    assert Measurement.objects.filter(run=run).count() == 8
    assert run.environment["child_start_s"] > 0 and run.environment["exit_code"] == 0
    assert run.environment["child_started_by"] == "zygote"  # RUN_CHILD_START's default: forked, as scrubbed
    assert _events(run) == 2


def test_saving_a_result_survives_a_killed_database_connection(user):
    """The connection is terminated (pg_terminate_backend) right before the save: it is retried on
    a new connection and the run succeeds with all its measurements."""
    finding = FindingFactory(created_by=user)
    experiment = services.experiment_create(finding=finding, user=user, plugin="echo", reproduce=False)
    # queued without a message: the session's worker (started by the tests above) must not take it
    reproduction = Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=[0])
    run = Run.objects.create(reproduction=reproduction, seed=0, requested_plugin_version="1.0.0")
    token = services.run_claim(run_id=run.pk, worker_host="test")
    assert isinstance(token, uuid.UUID)
    rows = [("baseline", m, 1, 1.0) for m in ("risk", "skill", "width")]
    rows += [("intervention", m, 1, 0.5) for m in ("risk", "skill", "width")]
    attempts = []

    def kill(pid: int) -> None:
        from django.db import connection as other  # this thread's own connection

        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        other.close()

    def save() -> bool:
        attempts.append(1)
        if len(attempts) == 1:
            connection.ensure_connection()
            killer = threading.Thread(target=kill, args=(connection.connection.info.backend_pid,))
            killer.start()
            killer.join()
        return services.run_succeed(
            run_id=run.pk, token=token, rows=rows, artifacts={}, environment={}, hardware="cpu",
            plugin_version="1.0.0", logs="",
        )

    assert save_with_retry(save, what="test", total_s=30) is True
    assert len(attempts) == 2
    run.refresh_from_db()
    assert run.state == "succeeded"
    assert Measurement.objects.filter(run=run).count() == 6
    assert _events(run) == 2


def test_the_child_environment_is_scrubbed(tmp_path, monkeypatch):
    from worker.sandbox import child_environment

    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SECRET_KEY", "DJANGO_SETTINGS_MODULE", "REDIS_URL",
                 "API_TOKEN"):
        monkeypatch.setenv(name, "secret")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    env = child_environment(tmp_path)
    assert not {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SECRET_KEY", "DJANGO_SETTINGS_MODULE", "REDIS_URL",
                "API_TOKEN"} & set(env)
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["OMP_NUM_THREADS"] == "2"
    assert env["HOME"] == env["TMPDIR"] == str(tmp_path)
    assert "secret" not in "".join(env.values())
    assert os.environ["DATABASE_URL"] == "secret"  # the parent's own environment is untouched


def test_a_run_whose_worker_dies_takes_its_whole_process_group_with_it(tmp_path):
    """The worker is SIGKILLed mid-run: the child and what the plugin started do not live on."""
    import signal
    import subprocess
    import sys
    import time

    pids = tmp_path / "pids"
    child = (
        "import os, subprocess, sys, time\n"
        "from worker.sandbox import _die_with_parent\n"
        "_die_with_parent(0.1)\n"
        "sleeper = subprocess.Popen(['sleep', '1000'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{sleeper.pid}}')\n"
        "time.sleep(1000)\n"
    )
    parent = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}], start_new_session=True)\n"
        "time.sleep(1000)\n"
    )
    worker_process = subprocess.Popen([sys.executable, "-c", parent], cwd=os.getcwd())
    try:
        wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, timeout=20)
        child_pid, sleeper_pid = map(int, pids.read_text().split())
        assert _alive(child_pid) and _alive(sleeper_pid)
        os.kill(worker_process.pid, signal.SIGKILL)
        worker_process.wait(5)
        started = time.monotonic()
        wait_for(lambda: not _alive(child_pid) and not _alive(sleeper_pid), timeout=10)
        assert time.monotonic() - started < 10
    finally:
        worker_process.kill()


# ---------------------------------------------------------------- the worker's own memory


def _memory_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class _PeakRss:
    """The peak resident memory of this (the worker's) process while a block runs: VmHWM reset
    through /proc/self/clear_refs where the kernel allows it, and VmRSS sampled every 5 ms."""

    def __enter__(self) -> _PeakRss:
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self.hwm = True
        except OSError:
            self.hwm = False
        self.before = _memory_kib("VmRSS")
        self.peak = self.before
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, _memory_kib("VmRSS"))

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        self._thread.join()
        if self.hwm:
            self.peak = max(self.peak, _memory_kib("VmHWM"))

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.before) / 1024


def _child(kind: str, tmp_path, **params):
    from worker.sandbox import ChildRun

    return ChildRun(
        run_id=0, plugin="tests.fakes.plugins:FaultyExperiment", params={"kind": kind, **params}, seed=0,
        device="cpu", deterministic=False, memory_limit_mb=0, scratch_root=str(tmp_path),
        max_artifact_bytes=1024 * 1024, max_artifacts_total_bytes=3 * 1024 * 1024,
    )


def _drive(child, timeout: float = 120) -> None:
    import time

    child.start()
    deadline = time.monotonic() + timeout
    while child.wait(0.2) is None and time.monotonic() < deadline:
        child.take_progress()
    child.finish()


@pytest.mark.django_db(transaction=False)
def test_a_noisy_plugin_cannot_exhaust_the_worker_s_memory(tmp_path):
    """~100 MB on stdout without a newline, 100k ctx.log calls and a 2 MiB channel line: the run
    still ends cleanly, the worker keeps a bounded tail of each, and its own memory hardly grows
    (before the fix it kept every line and buffered the whole stream: hundreds of MiB)."""
    from worker.sandbox import CHANNEL_LINE_MAX_BYTES, LOG_BUDGET_CHARS, OUTPUT_TAIL_BYTES

    child = _child("noisy", tmp_path, megabytes=100, lines=100_000)
    try:
        with _PeakRss() as rss:
            _drive(child)
            logs = child.logs()
        assert child.process.returncode == 0 and child.has_result and child.error is None, logs[-2000:]
        assert child.output_bytes >= 100 * 1024 * 1024
        assert sum(len(line) + 1 for line in child.lines) <= LOG_BUDGET_CHARS
        assert child.lines_dropped > 50_000 and child.lines[-1].endswith("noisy: done")
        assert child.channel_dropped == 1
        assert len(logs) < LOG_BUDGET_CHARS + OUTPUT_TAIL_BYTES + 10_000
        assert "earlier lines dropped]" in logs.splitlines()[0]
        assert f"messages longer than {CHANNEL_LINE_MAX_BYTES} bytes dropped" in logs
        assert f"(last {OUTPUT_TAIL_BYTES} of " in logs
        child.load_results()
        print(f"\nworker RSS grew {rss.growth_mib:.1f} MiB (VmHWM reset: {rss.hwm})")
        assert rss.growth_mib < 100, rss.growth_mib
    finally:
        child.cleanup()


@pytest.mark.django_db(transaction=False)
def test_an_artifact_over_the_limit_or_a_symlink_is_refused_before_it_is_read(tmp_path):
    from worker.sandbox import ArtifactRefused

    big = _child("big_artifact", tmp_path, megabytes=2)
    try:
        _drive(big)
        assert big.has_result
        with pytest.raises(ArtifactRefused, match=r"'evidence.bin' is 2097152 bytes; the limit is 1048576 bytes"):
            big.load_artifacts()
    finally:
        big.cleanup()
    link = _child("symlink_artifact", tmp_path)
    try:
        _drive(link)
        assert link.has_result
        with pytest.raises(ArtifactRefused, match="symbolic link"):
            link.load_artifacts()
    finally:
        link.cleanup()


@pytest.mark.django_db(transaction=False)
def test_the_child_s_files_are_capped_by_rlimit_fsize(tmp_path):
    child = _child("big_artifact", tmp_path, megabytes=3)
    child.spec["max_file_bytes"] = 1024 * 1024
    try:
        _drive(child)
        assert not child.has_result and child.error is not None
        assert "File too large" in child.error["error"], child.error
    finally:
        child.cleanup()


def test_an_artifact_over_the_limit_fails_the_run_clearly(user, monkeypatch, settings):
    """Through the runner (in-process): the run fails, saying which artifact and which limit."""
    from worker.runner import run_execute

    settings.RUN_MAX_ARTIFACT_BYTES = 1024 * 1024
    monkeypatch.setattr(services, "runs_dispatch", lambda run_ids, **kwargs: None)  # no worker takes it
    run = _run(user, "big_artifact", megabytes=2)
    assert run_execute(run.pk) == "failed"
    run.refresh_from_db()
    assert run.state == "failed"
    assert run.error.startswith("ArtifactRefused: artifact 'evidence.bin' is 2097152 bytes; the limit is 1048576"), \
        run.error
    assert not Measurement.objects.filter(run=run).exists()


def _probe(tmp_path, **options):
    from worker.sandbox import ChildRun

    return ChildRun(
        run_id=0, plugin="tests.fakes.plugins:NetProbeExperiment", params={}, seed=0, device="cpu",
        deterministic=False, memory_limit_mb=0, scratch_root=str(tmp_path), **options,
    )


def _probe_results(child) -> dict[str, float]:
    _drive(child, timeout=60)
    assert child.has_result and child.error is None, child.logs()[-2000:]
    results, _ = child.load_results()
    return results["baseline"]


@pytest.mark.django_db(transaction=False)
def test_optional_network_isolation_and_unprivileged_user(tmp_path):
    """RUN_ISOLATE_NETWORK: the plugin cannot reach the database's port (without it, the default,
    it can); RUN_AS_USER: the child's scratch directory and process belong to that account."""
    import pwd
    import shutil

    os.chmod(tmp_path, 0o755)  # the unprivileged account must reach its scratch directory
    plain = _probe(tmp_path)
    try:
        assert _probe_results(plain)["reached_network"] == 1.0  # the control: PostgreSQL is up
    finally:
        plain.cleanup()
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (the options are for root-started workers)")
    isolated = _probe(tmp_path, isolate_network=True)
    try:
        assert _probe_results(isolated)["reached_network"] == 0.0
    finally:
        isolated.cleanup()
    # RUN_AS_USER: the scratch directory is handed to the account and the child is started as it.
    # (Starting a real child as `nobody` needs an interpreter that account may read; this
    # machine's Python lives under /root, so only the hand-over is checked here.)
    nobody = pwd.getpwnam("nobody")
    unprivileged = _probe(tmp_path, run_as_user="nobody")
    try:
        (unprivileged.scratch / "spec.json").write_text("{}")
        options = unprivileged._user_options()
        assert options == {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        for path in [unprivileged.scratch, unprivileged.scratch / "spec.json"]:
            assert (path.stat().st_uid, path.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid)
    finally:
        unprivileged.cleanup()
