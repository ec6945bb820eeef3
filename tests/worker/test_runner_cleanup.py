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
