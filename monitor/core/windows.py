"""Tumbling windows on event time, sized by events or by seconds, with allowed lateness.

Count windows (`size_events`) close after that many events of the model, in arrival order; an
event is never late. Time windows (`size_seconds`) cover `[k*size, (k+1)*size)` of event time and
close when the watermark (latest event time seen minus `allowed_lateness_seconds`) passes their
end; an event for a window already closed is late: it is counted (`late_events`) and dropped,
never silently.

>>> from monitor.contracts.config import WindowConfig
>>> clock = WindowClock(WindowConfig(size_events=None, size_seconds=60, allowed_lateness_seconds=30))
>>> for segment in clock.segments(np.array([10.0, 70.0, 95.0, 20.0, 100.0])):
...     segment.accepted.tolist(), segment.closes_at, segment.closed
([0, 1, 2], 2, [0])
([4], None, [])
>>> clock.late_events
1
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.contracts.config import WindowConfig


@dataclass(frozen=True, slots=True)
class Segment:
    """Events of a batch up to a window close (see `WindowClock.segments`)."""

    accepted: np.ndarray
    """Indices in the batch of the events in open windows, in order."""
    closes_at: int | None
    """Index of the event after which `closed` windows closed, or None."""
    closed: list[int]


class WindowClock:
    """Decides which window each event belongs to and when windows close."""

    def __init__(self, config: WindowConfig):
        self.size_events = None if config.size_seconds else config.size_events
        self.size_seconds = config.size_seconds
        self.lateness = config.allowed_lateness_seconds
        self.open: list[int] = []
        """Ids of open windows, oldest first."""
        self.counts: dict[int, int] = {}
        self.watermark = -math.inf
        self.closed_before = -1
        """Every window id at or below this is closed."""
        self.late_events = 0

    def segments(self, timestamps: np.ndarray) -> Iterator[Segment]:
        """Assign a batch of events (their timestamps, in arrival order) to windows, cut where
        windows close.

        Each `Segment` holds the indices of the events it accepts (late ones are counted and
        left out); when its last event completes windows, `closes_at` is that event's index and
        `closed` the windows, oldest first. The work is per close, not per event."""
        timestamps = np.asarray(timestamps, dtype=np.float64)
        if self.size_events is not None:
            yield from self._count_segments(len(timestamps))
        else:
            yield from self._time_segments(timestamps)

    def _count_segments(self, n: int) -> Iterator[Segment]:
        start = 0
        while start < n:
            window = self.open[-1] if self.open else self.closed_before + 1
            if self.counts.get(window, 0) >= self.size_events:
                window += 1
            if window not in self.counts:
                self.open.append(window)
                self.counts[window] = 0
            stop = min(n, start + self.size_events - self.counts[window])
            self.counts[window] += stop - start
            accepted = np.arange(start, stop)
            if self.counts[window] >= self.size_events:
                yield Segment(accepted, stop - 1, self.advance())
            else:
                yield Segment(accepted, None, [])
            start = stop

    def _time_segments(self, timestamps: np.ndarray) -> Iterator[Segment]:
        size = self.size_seconds
        windows = np.floor_divide(timestamps, size).astype(np.int64)
        marks = np.maximum.accumulate(np.maximum(timestamps - self.lateness, self.watermark))
        none_open = np.iinfo(np.int64).max
        start, n = 0, len(timestamps)
        while start < n:
            ids = windows[start:]
            late = ids <= self.closed_before
            oldest = np.minimum.accumulate(np.where(late, none_open, ids))
            if self.open:
                oldest = np.minimum(oldest, self.open[0])
            # A close is only noticed at an accepted event (a late one changes nothing else).
            ready = ~late & (oldest != none_open) & ((oldest + 1) * size <= marks[start:])
            found = bool(ready.any())
            stop = int(ready.argmax()) + 1 if found else len(ids)
            accepted = start + np.flatnonzero(~late[:stop])
            self.late_events += stop - len(accepted)
            self.watermark = float(marks[start + stop - 1])
            for window, count in zip(*np.unique(windows[accepted], return_counts=True), strict=True):
                window = int(window)
                if window not in self.counts:
                    self.counts[window] = 0
                    bisect.insort(self.open, window)
                self.counts[window] += int(count)
            if found:
                yield Segment(accepted, start + stop - 1, self.advance())
            else:
                yield Segment(accepted, None, [])
            start += stop

    def advance(self) -> list[int]:
        """Close and return the windows that are complete, oldest first."""
        closing: list[int] = []
        for window in self.open:
            if self.size_events is not None:
                done = self.counts[window] >= self.size_events
            else:
                done = (window + 1) * self.size_seconds <= self.watermark
            if not done:
                break
            closing.append(window)
        for window in closing:
            self.open.remove(window)
            del self.counts[window]
            self.closed_before = window
        return closing

    def advance_to(self, timestamp: float) -> list[int]:
        """Move the watermark to `timestamp` (event time seen elsewhere in the stream) and close
        what that completes: a time window ends even when its model goes quiet. Count windows
        ignore time.

        >>> from monitor.contracts.config import WindowConfig
        >>> clock = WindowClock(WindowConfig(size_events=None, size_seconds=60, allowed_lateness_seconds=30))
        >>> [segment.closed for segment in clock.segments(np.array([10.0]))]
        [[]]
        >>> clock.advance_to(80.0), clock.advance_to(95.0)
        ([], [0])
        """
        if self.size_seconds is None:
            return []
        self.watermark = max(self.watermark, timestamp - self.lateness)
        return self.advance()

    def to_state(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "counts": [[w, n] for w, n in self.counts.items()],
            "watermark": None if self.watermark == -math.inf else self.watermark,
            "closed_before": self.closed_before,
            "late_events": self.late_events,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.open = list(state["open"])
        self.counts = {w: n for w, n in state["counts"]}
        self.watermark = -math.inf if state["watermark"] is None else state["watermark"]
        self.closed_before = state["closed_before"]
        self.late_events = state["late_events"]
