"""A run's scratch directory is removed after its outcome is recorded, in the background
(worker/runner.py ``_cleanup_later``): the worker takes its next run meanwhile."""

from __future__ import annotations

import threading

from tests.conftest import wait_for
from worker import runner
from worker.sandbox import ChildRun


def test_a_finished_run_s_scratch_directory_is_removed_in_the_background(tmp_path, monkeypatch):
    child = ChildRun(run_id=7, plugin="tests.fakes.plugins:EchoExperiment", params={}, seed=0, device="cpu",
                     deterministic=False, scratch_root=str(tmp_path))
    (child.scratch / "result.json").write_text("{}")
    release = threading.Event()
    cleanup = child.cleanup
    monkeypatch.setattr(child, "cleanup", lambda: (release.wait(5), cleanup()))
    runner._cleanup_later(child)  # returns at once, though the removal waits
    assert child.scratch.exists()
    release.set()
    wait_for(lambda: not child.scratch.exists(), timeout=5, interval=0.01)


def test_an_exiting_pool_process_finishes_the_removals_left_in_the_background(tmp_path, monkeypatch):
    # no thread survives a pool process's exit (billiard ends it with os._exit): its shutdown hook
    # removes what the background threads have not
    child = ChildRun(run_id=8, plugin="tests.fakes.plugins:EchoExperiment", params={}, seed=0, device="cpu",
                     deterministic=False, scratch_root=str(tmp_path))
    (child.scratch / "checkpoint.pt").write_text("x")
    stuck = threading.Event()
    cleanup = child.cleanup
    calls: list[str] = []

    def slow_then_real() -> None:
        if not calls:
            calls.append("background")
            stuck.wait(5)  # the background thread is still at it when the process exits
            return
        calls.append("shutdown")
        cleanup()

    monkeypatch.setattr(child, "cleanup", slow_then_real)
    runner._cleanup_later(child)
    wait_for(lambda: calls == ["background"], timeout=5, interval=0.01)
    from worker.celery import _stop_zygote

    _stop_zygote()  # the worker_process_shutdown handler
    assert calls == ["background", "shutdown"]
    assert not child.scratch.exists()
    stuck.set()


def test_a_run_process_not_yet_in_its_own_group_is_still_killed():
    import signal
    import subprocess
    import sys

    # a process that is not a group leader (as a spare before its setsid): killpg finds no group
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child = ChildRun(run_id=9, plugin="tests.fakes.plugins:EchoExperiment", params={}, seed=0, device="cpu",
                         deterministic=False, scratch_root="/tmp")
        child.process = process
        assert child.kill_group(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        child.cleanup()
