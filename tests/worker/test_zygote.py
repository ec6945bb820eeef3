"""The preloaded fork server (worker/zygote.py): runs forked from it are contained like freshly
started ones (scrubbed environment, own scratch directory and process group, memory limit,
truthful exit status), isolated from each other, and never lost when the zygote dies."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for
from worker import zygote as zygotes
from worker.sandbox import ChildRun

SECRETS = ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SECRET_KEY", "DJANGO_SETTINGS_MODULE", "REDIS_URL",
           "API_TOKEN")


@pytest.fixture(autouse=True)
def _fresh_zygote():
    """Each test starts without a zygote and leaves none behind."""
    zygotes.zygote_stop()
    yield
    zygotes.zygote_stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _child(tmp_path: Path, plugin: str = "tests.fakes.plugins:FaultyExperiment", *, memory_limit_mb: int = 0,
           **params) -> ChildRun:
    return ChildRun(
        run_id=0, plugin=plugin, params=params, seed=0, device="cpu", deterministic=False,
        memory_limit_mb=memory_limit_mb, scratch_root=str(tmp_path), start_method="zygote",
    )


def _drive(child: ChildRun, timeout: float = 60) -> ChildRun:
    if child.process is None:
        child.start()
    deadline = time.monotonic() + timeout
    while child.wait(0.2) is None and time.monotonic() < deadline:
        child.take_progress()
    child.finish()
    return child


def test_the_zygote_s_environment_holds_no_secrets(tmp_path, monkeypatch):
    for name in SECRETS:
        monkeypatch.setenv(name, "secret-value")
    child = _child(tmp_path, kind="snoop")
    try:
        _drive(child)
        assert child.started_by == "zygote", child.zygote_error
        zygote = zygotes.zygote_current()
        assert zygote is not None and zygote.alive()
        environ = Path(f"/proc/{zygote.pid}/environ").read_bytes().split(b"\0")
        names = {item.split(b"=", 1)[0].decode() for item in environ if item}
        assert not set(SECRETS) & names, names
        assert b"secret-value" not in b"\0".join(environ)
        assert "PATH" in names and "PYTHONPATH" in names
        # the forked run finds no secret either (the snoop plugin looks for them)
        assert child.process.returncode == 0 and child.has_result, child.logs()[-2000:]
        results, _ = child.load_results()
        assert results["baseline"]["found_secret"] == 0.0
        assert results["baseline"]["found_settings"] == 0.0
        assert results["baseline"]["wrote_app_dir"] == 0.0
    finally:
        child.cleanup()


def test_forked_runs_are_isolated_from_each_other(tmp_path):
    """Two runs: separate scratch directories (cwd, TMPDIR, HOME), their own session, the
    worker as parent; a module-level global run 1 changed is as the zygote left it in run 2."""
    plugin = "tests.worker.zygote_plugins:GlobalExperiment"
    seen = []
    for _ in range(2):
        child = _child(tmp_path, plugin)
        try:
            _drive(child)
            assert child.started_by == "zygote", child.zygote_error
            assert child.process.returncode == 0 and child.has_result, child.logs()[-2000:]
            results, _ = child.load_results()
            assert results["baseline"] == {"counter": 1.0, "marker_found": 0.0}
            line = re.search(r"cwd=(\S+) tmpdir=(\S+) home=(\S+) pid=(\d+) ppid=(\d+) pgid=(\d+) sid=(\d+)",
                             child.logs())
            cwd, tmpdir, home, pid, ppid, pgid, sid = line.groups()
            assert cwd == tmpdir == home == str(child.scratch)
            assert int(pid) == child.process.pid == int(pgid) == int(sid)  # its own session and group
            assert int(ppid) == os.getpid()  # re-parented to the worker, which reaps it
            seen.append((cwd, zygotes.zygote_current().pid))
        finally:
            child.cleanup()
    assert seen[0][0] != seen[1][0]
    assert seen[0][1] == seen[1][1]  # one zygote served both


def test_the_memory_limit_holds_in_a_forked_run(tmp_path):
    hog = _child(tmp_path, kind="hog", megabytes=1024, memory_limit_mb=256)
    small = _child(tmp_path, kind="hog", megabytes=32, memory_limit_mb=256)
    try:
        _drive(hog)
        assert hog.started_by == "zygote", hog.zygote_error
        assert not hog.has_result and hog.error is not None and hog.error["memory"], hog.logs()[-2000:]
        assert hog.environment["memory_limit"] == "RLIMIT_AS 256 MiB over the runtime's baseline"
        _drive(small)
        assert small.started_by == "zygote"
        assert small.has_result and small.process.returncode == 0, small.logs()[-2000:]
    finally:
        hog.cleanup()
        small.cleanup()


def test_a_forked_run_s_exit_code_or_signal_is_reported_truthfully(tmp_path):
    crash = _child(tmp_path, kind="crash", seconds=0.0)
    raising = _child(tmp_path, kind="raise")
    hang = _child(tmp_path, kind="hang")
    try:
        _drive(crash)
        assert crash.started_by == "zygote"
        assert crash.exit_description() == ({"exit_code": 3}, "the run's process exited with code 3")
        assert "about to crash" in crash.logs()
        _drive(raising)
        assert raising.exit_description()[0] == {"exit_code": 1}
        assert raising.error["error"] == "RuntimeError: the faulty plugin raised"
        hang.start()
        assert hang.started_by == "zygote"
        wait_for(lambda: "faulty: hang" in hang.logs(), timeout=30, interval=0.05)
        assert hang.wait(0.3) is None
        assert hang.kill_group(signal.SIGTERM)
        assert hang.wait(10) == -signal.SIGTERM
        hang.finish()
        assert hang.exit_description() == ({"exit_signal": "SIGTERM"}, "the run's process was killed by SIGTERM")
    finally:
        for child in (crash, raising, hang):
            child.finish()
            child.cleanup()


def test_a_process_the_forked_run_leaves_behind_is_killed_and_reaped(tmp_path):
    child = _child(tmp_path, kind="fork")
    try:
        _drive(child)
        assert child.started_by == "zygote" and child.has_result
        pid = int(re.search(r"left pid (\d+) behind", child.logs()).group(1))
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=5, interval=0.05)  # dead and reaped
    finally:
        child.cleanup()


def test_killing_the_zygote_mid_run_loses_no_run(tmp_path):
    """The run already forked finishes (it is the worker's child, not the zygote's); the next run
    gets a new zygote."""
    first = _child(tmp_path, "tests.fakes.plugins:EchoExperiment", sleep_s=1.5)
    second = _child(tmp_path, "tests.fakes.plugins:EchoExperiment")
    try:
        first.start()
        assert first.started_by == "zygote", first.zygote_error
        old = zygotes.zygote_current()
        os.kill(old.pid, signal.SIGKILL)
        wait_for(lambda: not _alive(old.pid), timeout=10, interval=0.05)
        _drive(first)
        assert first.process.returncode == 0 and first.has_result, first.logs()[-2000:]
        assert first.load_results()[0]["baseline"]["risk"] == 1.0
        _drive(second)
        assert second.started_by == "zygote" and second.has_result
        assert zygotes.zygote_current().pid != old.pid
    finally:
        first.cleanup()
        second.cleanup()


def test_a_zygote_that_does_not_answer_falls_back_to_a_fresh_child(tmp_path, monkeypatch):
    monkeypatch.setattr(zygotes, "REPLY_TIMEOUT_S", 1.0)
    warm = _drive(_child(tmp_path, "tests.fakes.plugins:EchoExperiment"))
    warm.cleanup()
    stuck = zygotes.zygote_current()
    os.kill(stuck.pid, signal.SIGSTOP)  # alive, but never answers
    child = _child(tmp_path, "tests.fakes.plugins:EchoExperiment")
    try:
        _drive(child)
        assert child.started_by == "spawn" and "did not answer" in child.zygote_error
        assert child.process.returncode == 0 and child.has_result
        assert not _alive(stuck.pid)  # the stuck zygote was stopped
        assert zygotes.zygote_current() is None  # the next run starts a new one
    finally:
        child.cleanup()


def test_gpu_runs_and_the_spawn_setting_start_a_fresh_child(tmp_path):
    gpu = ChildRun(run_id=0, plugin="tests.fakes.plugins:EchoExperiment", params={}, seed=0, device="gpu",
                   deterministic=False, scratch_root=str(tmp_path), start_method="zygote")
    spawn = ChildRun(run_id=0, plugin="tests.fakes.plugins:EchoExperiment", params={}, seed=0, device="cpu",
                     deterministic=False, scratch_root=str(tmp_path), start_method="spawn")
    isolated = ChildRun(run_id=0, plugin="tests.fakes.plugins:EchoExperiment", params={}, seed=0, device="cpu",
                        deterministic=False, scratch_root=str(tmp_path), isolate_network=True)
    try:
        assert not gpu.zygote_allowed() and not spawn.zygote_allowed() and not isolated.zygote_allowed()
        for child in (gpu, spawn):
            _drive(child)
            assert child.started_by == "spawn" and child.has_result, child.logs()[-2000:]
        assert zygotes.zygote_current() is None  # no zygote was started for them
    finally:
        for child in (gpu, spawn, isolated):
            child.cleanup()


def test_the_zygote_and_its_runs_die_with_their_worker(tmp_path):
    """SIGKILL a worker that has a zygote, a forked run and a spare: all are gone within seconds."""
    pids = tmp_path / "pids"
    script = (
        "import time\n"
        "from worker import zygote\n"
        "from worker.sandbox import ChildRun\n"
        f"child = ChildRun(run_id=0, plugin='tests.fakes.plugins:FaultyExperiment', params={{'kind': 'hang'}},"
        f" seed=0, device='cpu', deterministic=False, scratch_root={str(tmp_path)!r})\n"
        "child.start()\n"
        "assert child.started_by == 'zygote', child.zygote_error\n"
        "import os\n"
        "z = zygote.zygote_current().pid\n"
        "def spares():\n"  # the next run's spare, forked ahead: this process's child in the zygote's group
        "    found = []\n"
        "    for e in filter(str.isdigit, os.listdir('/proc')):\n"
        "        try:\n"
        "            f = open(f'/proc/{e}/stat').read().rsplit(')', 1)[1].split()\n"
        "        except OSError:\n"
        "            continue\n"
        "        if int(f[1]) == os.getpid() and int(f[2]) == z != int(e):\n"
        "            found.append(e)\n"
        "    return found\n"
        "while not spares():\n"
        "    time.sleep(0.02)\n"
        f"open({str(pids)!r}, 'w').write(f'{{z}} {{child.process.pid}} {{spares()[0]}}')\n"
        "time.sleep(1000)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, start_new_session=True)
    try:
        wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 3, timeout=60)
        zygote_pid, run_pid, spare_pid = map(int, pids.read_text().split())
        assert _alive(zygote_pid) and _alive(run_pid) and _alive(spare_pid)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(5)
        wait_for(lambda: not any(map(_alive, (zygote_pid, run_pid, spare_pid))), timeout=10, interval=0.1)
    finally:
        if worker.poll() is None:
            worker.kill()
