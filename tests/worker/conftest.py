"""Worker tests end only when the worker is idle: a task enqueued on commit (say, the effects
recompute after a run finished) still writing while the test database is flushed deadlocks the
flush (TRUNCATE)."""

import re
import time

import pytest

TASK_LINE = re.compile(r"Task [\w.]+\[([0-9a-f-]+)\] (received|succeeded|failed|raised|retry)")


def worker_busy(output: str) -> bool:
    """Whether some task the worker received has not ended yet, read from its log."""
    last: dict[str, str] = {}
    for task_id, status in TASK_LINE.findall(output):
        last[task_id] = status
    return any(status == "received" for status in last.values())


_started: list = []  # the session's worker, once a test has started it


@pytest.fixture(autouse=True)
def _worker_idle_after_test(request):
    if "celery_worker" in request.fixturenames and not _started:
        _started.append(request.getfixturevalue("celery_worker"))
    yield
    # also after tests that run the runner in-process: the session's worker may still be busy with
    # the tasks their commits enqueued
    if not _started or _started[0].process.poll() is not None:
        return
    worker = _started[0]
    deadline = time.monotonic() + 60
    seen = None
    while time.monotonic() < deadline:
        output = worker.output()
        if not worker_busy(output) and output == seen:  # idle, and nothing new for one interval
            return
        seen = output
        time.sleep(0.5)


def test_worker_busy_reads_the_log():
    received = "Task worker.effects_recompute[0a-1] received\n"
    assert worker_busy(received)
    assert not worker_busy(received + "Task worker.effects_recompute[0a-1] succeeded in 0.1s: None\n")
    assert worker_busy(received + "Task worker.run_execute[0b-2] received\n"
                       "Task worker.effects_recompute[0a-1] succeeded in 0.1s: None\n")


@pytest.fixture(autouse=True)
def _reaper_clock_forgotten():
    """Each test starts with a reaper that has no memory of earlier passes (see
    ``registry.reproductions.services.reaper_clock_advance``)."""
    from worker import broker

    broker.reaper_clock_clear()
    yield
    broker.reaper_clock_clear()
