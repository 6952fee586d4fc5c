from __future__ import annotations

from monitor.contracts.config import WindowConfig
from monitor.core.windows import WindowClock


def test_count_windows_close_after_size_events():
    clock = WindowClock(WindowConfig(size_events=3))
    closed = []
    for t in range(7):
        assert clock.assign(float(t)) == t // 3
        if clock.ready():
            closed += clock.advance()
    assert closed == [0, 1]
    assert clock.late_events == 0


def test_time_windows_follow_event_time_not_arrival_order():
    clock = WindowClock(WindowConfig(size_events=None, size_seconds=10, allowed_lateness_seconds=5))
    assert clock.assign(3.0) == 0
    assert clock.assign(12.0) == 1
    assert clock.assign(9.0) == 0  # out of order, within lateness: still counted in window 0
    assert not clock.ready()
    assert clock.assign(16.0) == 1  # watermark 11 passes window 0's end
    assert clock.advance() == [0]
    assert clock.assign(8.0) is None  # window 0 is closed: late, counted
    assert clock.late_events == 1


def test_time_window_without_lateness_closes_on_first_later_event():
    clock = WindowClock(WindowConfig(size_events=None, size_seconds=60))
    clock.assign(59.0)
    clock.assign(61.0)
    assert clock.advance() == [0]


def test_quiet_gap_closes_every_window_that_passed():
    clock = WindowClock(WindowConfig(size_events=None, size_seconds=10))
    clock.assign(1.0)
    clock.assign(55.0)
    assert clock.advance() == [0]  # empty windows 1..4 were never opened, nothing to report


def test_state_round_trip():
    clock = WindowClock(WindowConfig(size_events=None, size_seconds=10, allowed_lateness_seconds=5))
    for t in (1.0, 12.0, 3.0):
        clock.assign(t)
    copy = WindowClock(WindowConfig(size_events=None, size_seconds=10, allowed_lateness_seconds=5))
    copy.restore(clock.to_state())
    assert copy.to_state() == clock.to_state()
    assert copy.assign(30.0) == clock.assign(30.0) and copy.advance() == clock.advance()
