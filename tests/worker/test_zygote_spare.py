"""The zygote's spare run process (worker/zygote.py, ``_Spare``): a run starts in a process forked
ahead of it, which is then contained like any forked run (the worker's child, its own session,
its own scratch directory), and a spare that is never used is reaped, never left a zombie."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for
from worker import zygote as zygotes
from worker.sandbox import ChildRun


@pytest.fixture(autouse=True)
def _fresh_zygote():
    zygotes.zygote_stop()
    yield
    zygotes.zygote_stop()


def _children_in_group(pgid: int) -> list[int]:
    """This process's children (zombies included) in process group ``pgid``, but for its leader."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and int(fields[2]) == pgid and int(entry) != pgid:
            found.append(int(entry))
    return found


def _run(tmp_path: Path) -> ChildRun:
    child = ChildRun(run_id=0, plugin="tests.worker.zygote_plugins:GlobalExperiment", params={}, seed=0,
                     device="cpu", deterministic=False, scratch_root=str(tmp_path), start_method="zygote")
    child.start()
    deadline = time.monotonic() + 30
    while child.wait(0.2) is None and time.monotonic() < deadline:
        pass
    child.finish()
    return child


def test_a_run_starts_as_the_zygote_s_spare_and_an_unused_spare_is_reaped(tmp_path):
    first = _run(tmp_path)
    try:
        assert first.started_by == "zygote" and first.has_result, first.zygote_error or first.logs()[-2000:]
        zygote = zygotes.zygote_current()
        # the next spare: already this worker's child, waiting in the zygote's process group
        wait_for(lambda: len(_children_in_group(zygote.pid)) == 1, timeout=10, interval=0.02)
        (spare,) = _children_in_group(zygote.pid)
        used = zygote.spares_used
        second = _run(tmp_path)
        try:
            assert second.process.pid == spare and zygote.spares_used == used + 1
            assert second.process.returncode == 0 and second.has_result, second.logs()[-2000:]
            line = re.search(r"cwd=(\S+) tmpdir=(\S+) home=(\S+) pid=(\d+) ppid=(\d+) pgid=(\d+) sid=(\d+)",
                             second.logs())
            cwd, tmpdir, home, pid, ppid, pgid, sid = line.groups()
            assert cwd == tmpdir == home == str(second.scratch) != str(first.scratch)
            assert int(pid) == spare == int(pgid) == int(sid) and int(ppid) == os.getpid()
            assert second.load_results()[0]["baseline"]["counter"] == 1.0  # the zygote's state, not run 1's
        finally:
            second.cleanup()
        wait_for(lambda: len(_children_in_group(zygote.pid)) == 1, timeout=10, interval=0.02)
        zygotes.zygote_stop()
        assert _children_in_group(zygote.pid) == []  # the unused spare was killed and reaped
    finally:
        first.cleanup()


def test_reaping_spares_keeps_the_zygote_s_own_exit_status(tmp_path):
    import signal

    first = _run(tmp_path)
    try:
        zygote = zygotes.zygote_current()
        wait_for(lambda: len(_children_in_group(zygote.pid)) == 1, timeout=10, interval=0.02)
        os.kill(zygote.pid, signal.SIGKILL)  # as the OOM killer would
        zygote.reap_spares(timeout=5.0)  # its spare exits too (its socket closed)
        assert zygote.process.returncode == -signal.SIGKILL  # not 0: the status was not taken by the group reap
        assert _children_in_group(zygote.pid) == []
    finally:
        first.cleanup()
