from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.contracts.config import WindowConfig
from monitor.core.windows import WindowClock

TIME = WindowConfig(size_events=None, size_seconds=10, allowed_lateness_seconds=5)


def run(clock: WindowClock, *batches: list[float]) -> list[tuple[list[int], int | None, list[int]]]:
    """Every segment of the batches, with indices counted over all of them."""
    out, base = [], 0
    for batch in batches:
        for segment in clock.segments(np.array(batch, dtype=float)):
            closes_at = None if segment.closes_at is None else base + segment.closes_at
            out.append(((base + segment.accepted).tolist(), closes_at, segment.closed))
        base += len(batch)
    return out


def test_count_windows_close_after_size_events():
    clock = WindowClock(WindowConfig(size_events=3))
    assert run(clock, [float(t) for t in range(7)]) == [
        ([0, 1, 2], 2, [0]),
        ([3, 4, 5], 5, [1]),
        ([6], None, []),
    ]
    assert clock.late_events == 0


def test_count_windows_close_at_the_same_event_whatever_the_batches():
    whole = run(WindowClock(WindowConfig(size_events=3)), [0.0] * 7)
    split = run(WindowClock(WindowConfig(size_events=3)), [0.0] * 2, [0.0] * 4, [0.0])
    assert [s[1] for s in whole if s[1] is not None] == [s[1] for s in split if s[1] is not None] == [2, 5]


def test_time_windows_follow_event_time_not_arrival_order():
    clock = WindowClock(TIME)
    # 9.0 is out of order but within lateness: still window 0; 16.0 moves the watermark to 11,
    # past window 0's end; then 8.0 is late (window 0 is closed): counted, not accepted.
    assert run(clock, [3.0, 12.0, 9.0, 16.0, 8.0]) == [([0, 1, 2, 3], 3, [0]), ([], None, [])]
    assert clock.late_events == 1


def test_time_window_without_lateness_closes_on_first_later_event():
    clock = WindowClock(WindowConfig(size_events=None, size_seconds=60))
    assert run(clock, [59.0, 61.0]) == [([0, 1], 1, [0])]


def test_quiet_gap_closes_every_window_that_passed():
    clock = WindowClock(WindowConfig(size_events=None, size_seconds=10))
    assert run(clock, [1.0, 55.0]) == [([0, 1], 1, [0])]  # empty windows 1..4 were never opened


def test_state_round_trip():
    clock = WindowClock(TIME)
    run(clock, [1.0, 12.0, 3.0])
    copy = WindowClock(TIME)
    copy.restore(clock.to_state())
    assert copy.to_state() == clock.to_state()
    assert run(copy, [30.0]) == run(clock, [30.0])


class PerEventClock:
    """The clock's rules one event at a time, as first written: the reference for `segments`."""

    def __init__(self, config: WindowConfig):
        self.clock = WindowClock(config)

    def assign(self, timestamp: float) -> int | None:
        c = self.clock
        if c.size_events is not None:
            window = c.open[-1] if c.open else c.closed_before + 1
            if c.counts.get(window, 0) >= c.size_events:
                window += 1
        else:
            window = int(timestamp // c.size_seconds)
            c.watermark = max(c.watermark, timestamp - c.lateness)
        if window <= c.closed_before:
            c.late_events += 1
            return None
        if window not in c.counts:
            c.open.append(window)
            c.open.sort()
            c.counts[window] = 0
        c.counts[window] += 1
        return window

    def ready(self) -> bool:
        c = self.clock
        if not c.open:
            return False
        if c.size_events is not None:
            return c.counts[c.open[0]] >= c.size_events
        return (c.open[0] + 1) * c.size_seconds <= c.watermark

    def run(self, timestamps: list[float]) -> list[tuple[int, list[int]]]:
        """(event index, windows closed) at each close."""
        closes = []
        for i, t in enumerate(timestamps):
            if self.assign(t) is not None and self.ready():
                closes.append((i, self.clock.advance()))
        return closes


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(0, 200, allow_nan=False).map(lambda t: math.floor(t * 4) / 4), max_size=60),
    st.lists(st.integers(1, 20), max_size=5),
    st.sampled_from(
        [
            WindowConfig(size_events=None, size_seconds=10, allowed_lateness_seconds=0),
            WindowConfig(size_events=None, size_seconds=10, allowed_lateness_seconds=7),
            WindowConfig(size_events=None, size_seconds=3, allowed_lateness_seconds=25),
            WindowConfig(size_events=4),
        ]
    ),
)
def test_segments_agree_with_the_per_event_rules_however_the_batches_fall(timestamps, cuts, config):
    reference = PerEventClock(config)
    expected = reference.run(timestamps)
    bounds = sorted({0, len(timestamps), *(c for c in np.cumsum(cuts) if c < len(timestamps))})
    clock = WindowClock(config)
    segments = run(clock, *(timestamps[a:b] for a, b in zip(bounds, bounds[1:], strict=False)))
    assert [(s[1], s[2]) for s in segments if s[1] is not None] == expected
    accepted = [i for s in segments for i in s[0]]
    assert len(accepted) + clock.late_events == len(timestamps)
    state, expected_state = clock.to_state(), reference.clock.to_state()
    assert sorted(state.pop("counts")) == sorted(expected_state.pop("counts"))
    assert state == expected_state
