"""The recovery rules without workers: the result save's back-off stays within a heartbeat
interval, and the reaper measures staleness from its own last contact with the database."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from registry.reproductions.services import claim_stale_cutoff, heartbeat_effective, reaper_clock_advance
from worker import runner

INTERVAL, TIMEOUT = 5.0, 15.0


def test_the_save_back_off_never_exceeds_the_heartbeat_interval(monkeypatch, settings):
    """Before: 0.5, 1, 2, 4, 8, 16, 30 s apart; a database back after 16 s saw the result only up
    to 30 s later, after the reaper had requeued the run."""
    settings.RUN_HEARTBEAT_INTERVAL_S = 3.0
    sleeps: list[float] = []
    monkeypatch.setattr(runner.time, "sleep", sleeps.append)
    calls = []

    def save() -> str:
        calls.append(1)
        if len(calls) <= 8:
            raise OperationalError("the database is down")
        return "saved"

    assert runner.save_with_retry(save, what="test", total_s=10_000) == "saved"
    assert sleeps == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0]


def _passes(clock, times):
    for now in times:
        clock = reaper_clock_advance(clock, now, interval=INTERVAL, timeout=TIMEOUT)
        yield now, clock
        clock = {**clock, "last_success": now}


def test_regular_passes_measure_staleness_from_the_heartbeat():
    for _now, clock in _passes(None, [1000.0 + 5 * i for i in range(20)]):
        assert heartbeat_effective(990.0, clock, timeout=TIMEOUT) == 990.0
        assert clock.get("resumed_at") is None


def test_after_a_blind_spell_a_run_alive_before_it_gets_a_timeout_from_the_resumption():
    # passes every 5 s until 1000, then none until 1060 (the database was down)
    clock = {"last_success": 1000.0}
    clock = reaper_clock_advance(clock, 1060.0, interval=INTERVAL, timeout=TIMEOUT)
    assert clock["blind_from"] == 1000.0 and clock["resumed_at"] == 1060.0
    assert heartbeat_effective(999.0, clock, timeout=TIMEOUT) == 1060.0  # alive at the last success
    assert heartbeat_effective(950.0, clock, timeout=TIMEOUT) == 950.0  # already stale then: no grace
    assert heartbeat_effective(None, clock, timeout=TIMEOUT) is None
    # the grace ends RUN_HEARTBEAT_TIMEOUT_S after the resumption
    clock = reaper_clock_advance({**clock, "last_success": 1070.0}, 1075.0, interval=INTERVAL, timeout=TIMEOUT)
    assert clock["resumed_at"] is None and heartbeat_effective(999.0, clock, timeout=TIMEOUT) == 999.0


@pytest.mark.parametrize("gap", [3 * INTERVAL, -100.0])
def test_a_pass_within_three_intervals_or_earlier_is_no_blind_spell(gap):
    clock = reaper_clock_advance({"last_success": 1000.0}, 1000.0 + gap, interval=INTERVAL, timeout=TIMEOUT)
    assert clock.get("resumed_at") is None


def _cutoff(now: float, clock: dict | None, beat: float | None = None) -> float:
    return claim_stale_cutoff(now, clock, beat, interval=INTERVAL, timeout=TIMEOUT)


def test_a_claim_goes_by_heartbeats_alone_without_a_blind_spell():
    assert _cutoff(2000.0, None) == 2000.0 - TIMEOUT
    assert _cutoff(2000.0, {"last_success": 1998.0}, beat=1999.0) == 2000.0 - TIMEOUT


def test_a_claim_gives_the_reapers_grace_after_it_resumed():
    """The reaper was blind from 1000 to 1060: a run alive at 1000 may not be taken over before
    1060 + TIMEOUT, as the reaper would not requeue it; one already stale at 1000 may."""
    clock = {"last_success": 1060.0, "blind_from": 1000.0, "resumed_at": 1060.0}
    cutoff = _cutoff(1070.0, clock)
    assert cutoff == 1000.0 - TIMEOUT
    assert 999.0 >= cutoff and not 980.0 >= cutoff
    assert _cutoff(1060.0 + TIMEOUT, clock) == 1060.0  # the grace is over


def test_a_claim_gives_grace_while_the_beat_lives_but_the_reaper_has_not_passed():
    """The database is just back: the beat triggered the reaper, whose passes failed."""
    clock = {"last_success": 1000.0}
    assert _cutoff(1060.0, clock, beat=1058.0) == 1000.0 - TIMEOUT
    # a dead beat: no reaper will ever pass, the redelivered message is the only rescue
    assert _cutoff(1060.0, clock, beat=900.0) == 1060.0 - TIMEOUT
    assert _cutoff(1060.0, clock, beat=None) == 1060.0 - TIMEOUT
