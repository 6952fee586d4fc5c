"""Tumbling windows on event time, sized by events or by seconds, with allowed lateness.

Count windows (`size_events`) close after that many events of the model, in arrival order; an
event is never late. Time windows (`size_seconds`) cover `[k*size, (k+1)*size)` of event time and
close when the watermark (latest event time seen minus `allowed_lateness_seconds`) passes their
end; an event for a window already closed is late: it is counted (`late_events`) and dropped,
never silently.

>>> from monitor.contracts.config import WindowConfig
>>> clock = WindowClock(WindowConfig(size_events=None, size_seconds=60, allowed_lateness_seconds=30))
>>> clock.assign(10.0), clock.assign(70.0), clock.advance(), clock.assign(95.0), clock.advance()
(0, 1, [], 1, [0])
>>> clock.assign(20.0), clock.late_events
(None, 1)
"""

from __future__ import annotations

import math
from typing import Any

from monitor.contracts.config import WindowConfig


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

    def assign(self, timestamp: float) -> int | None:
        """The window the event belongs to, or None when it is late (counted)."""
        if self.size_events is not None:
            window = self.open[-1] if self.open else self.closed_before + 1
            if self.counts.get(window, 0) >= self.size_events:
                window += 1
        else:
            window = int(timestamp // self.size_seconds)
            self.watermark = max(self.watermark, timestamp - self.lateness)
        if window <= self.closed_before:
            self.late_events += 1
            return None
        if window not in self.counts:
            self.open.append(window)
            self.open.sort()
            self.counts[window] = 0
        self.counts[window] += 1
        return window

    def ready(self) -> bool:
        """Whether `advance` would close a window (cheap, called after every event)."""
        if not self.open:
            return False
        oldest = self.open[0]
        if self.size_events is not None:
            return self.counts[oldest] >= self.size_events
        return (oldest + 1) * self.size_seconds <= self.watermark

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
        >>> clock.assign(10.0), clock.advance_to(80.0), clock.advance_to(95.0)
        (0, [], [0])
        """
        if self.size_seconds is None:
            return []
        self.watermark = max(self.watermark, timestamp - self.lateness)
        return self.advance()

    def bounds(self, window: int) -> tuple[float | None, float | None]:
        """Event-time bounds of a time window (None for count windows)."""
        if self.size_seconds is None:
            return None, None
        return window * self.size_seconds, (window + 1) * self.size_seconds

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
