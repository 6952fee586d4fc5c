"""The window ledger: windows of prediction event time, and which window each event counts in.

Label coverage, CBPE estimates, serving signals and per-window metrics are all judged per window
of the model's *prediction* time, while outcomes arrive later and out of order. The ledger is the
one place that knows the window boundaries: it maps a batch of prediction times to windows
(`positions`, a `searchsorted` on the closed windows' ends), closes the open window, and forgets
windows once nothing can change them any more (`trim`), so every check reads the same windows.

Bounded state: a closed window is remembered until its label coverage is final (older than the
coverage horizon, and judged when `labels_missing` is on). With short windows and a long horizon
that is many windows (a week of 1,000-prediction windows at 10 predictions/s is 6,048), so beyond
`MAX_TRACKED_WINDOWS` the oldest windows are merged pairwise instead of growing the state.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import Any

import numpy as np

from monitor.evaluation.cbpe import CBPEWindow
from monitor.evaluation.evidence import finite
from monitor.evaluation.metrics import MetricsAccumulator, ServingStats

MAX_TRACKED_WINDOWS = 256
"""Closed windows remembered for label coverage and CBPE estimate-vs-realised (~0.18 KiB each in
the state, so ~46 KiB at most per model).

Beyond it, the two adjacent old windows (outside the last `max_report_windows`) that together
cover the fewest original windows are merged into one: their prediction, label and loss counts
add up, so labels that arrive late still count and `labels_missing` still judges every
prediction, only in coarser steps (a horizon of H seconds is judged in steps of about
H / MAX_TRACKED_WINDOWS at worst); a merged window's CBPE estimate is dropped (`cbpe_report`
and `window_metrics` list the windows that were not merged). Before this cap the history grew
by one window per close for the whole coverage horizon (up to 100,000 windows, ~18 MiB); a few
hundred windows keep a week's horizon in steps of under an hour."""


class Window:
    """One window of prediction event time: counts for coverage and CBPE, metrics while recent."""

    __slots__ = ("index", "start", "end", "predictions", "labelled", "loss", "metrics", "cbpe", "estimate", "serving",
                 "judged")  # fmt: skip

    def __init__(self, index: int, start: float):
        self.index = index
        """Number of the window (the first of the windows it covers, once merged)."""
        self.start = start
        self.end = math.inf
        self.predictions = 0
        self.labelled = 0
        self.loss = 0.0
        """Sum of the outcomes' losses (errors, or absolute errors)."""
        self.metrics: MetricsAccumulator | None = None
        """Overall (group 0) and per version (group 1 + version code); dropped when old."""
        self.cbpe: CBPEWindow | None = None
        self.estimate: dict[str, Any] | None = None
        self.serving: dict[int, ServingStats] = {}
        self.judged = False
        """Label coverage already judged (`labels_missing`)."""

    def copy(self) -> Window:
        """A copy whose counts and metrics can change without changing this window (a read view)."""
        other = copy.copy(self)
        other.metrics = copy.deepcopy(self.metrics)
        return other

    def to_state(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start": finite(self.start),
            "end": finite(self.end),
            "predictions": self.predictions,
            "labelled": self.labelled,
            "loss": self.loss,
            "metrics": self.metrics.to_state() if self.metrics else None,
            "cbpe": self.cbpe.to_state() if self.cbpe else None,
            "estimate": self.estimate,
            "serving": [[v, s.to_state()] for v, s in self.serving.items()],
            "judged": self.judged,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Window:
        window = cls(state["index"], -math.inf if state["start"] is None else state["start"])
        window.end = math.inf if state["end"] is None else state["end"]
        window.predictions = state["predictions"]
        window.labelled = state["labelled"]
        window.loss = state["loss"]
        window.metrics = MetricsAccumulator.from_state(state["metrics"]) if state["metrics"] else None
        window.cbpe = CBPEWindow.from_state(state["cbpe"]) if state["cbpe"] else None
        window.estimate = state["estimate"]
        window.serving = {v: ServingStats.from_state(s) for v, s in state["serving"]}
        window.judged = state["judged"]
        return window


class WindowLedger:
    """The closed windows still tracked (oldest first) and the open one."""

    def __init__(self) -> None:
        self.windows: deque[Window] = deque()
        self.open = Window(0, -math.inf)
        self.ends = np.zeros(0)
        """End of each tracked closed window, for `searchsorted`."""
        self.tracked_from = -math.inf
        """Predictions at or before this time belong to windows no longer tracked."""
        self.trimmed = 0
        """Windows below this index have had their metrics dropped."""
        self.first_time = math.inf
        """Earliest prediction time seen: the start of the first window."""
        self.cbpe_from = 0
        """Windows below this index are estimated already: late predictions no longer count in CBPE."""
        self._copied: set[int] | None = None
        """In a read view: positions whose window was copied before being written."""

    def positions(self, times: np.ndarray) -> np.ndarray:
        """Position of each prediction time: index into `windows` (`len(windows)`: the open
        window); -1 when older than every tracked window."""
        positions = np.searchsorted(self.ends, times, side="left")
        if math.isfinite(self.tracked_from):
            positions[times <= self.tracked_from] = -1
        return positions

    def at(self, position: int) -> Window | None:
        """The window at a position from `positions`, to be written (a read view copies it first)."""
        if position < 0:
            return None
        if position >= len(self.windows):
            return self.open
        if self._copied is not None and position not in self._copied:
            self._copied.add(position)
            self.windows[position] = self.windows[position].copy()
        return self.windows[position]

    def view(self) -> WindowLedger:
        """A ledger that reads like this one and can take buffered events without changing it."""
        other = WindowLedger()
        other.windows = deque(self.windows)
        other.open = self.open.copy()
        other.ends = self.ends
        other.tracked_from, other.trimmed = self.tracked_from, self.trimmed
        other.first_time, other.cbpe_from = self.first_time, self.cbpe_from
        other._copied = set()
        return other

    def close(self, end: float, pending_times: list[float]) -> Window:
        """Close the open window at `end` (never before the previous end) and open the next;
        `pending_times` are the buffered prediction times (the first window starts at the
        earliest prediction)."""
        closing = self.open
        if self.windows:
            end = max(end, self.windows[-1].end)
        closing.end = end
        if not math.isfinite(closing.start):
            closing.start = min(self.first_time, *pending_times, end)
        self.windows.append(closing)
        self.open = Window(closing.index + 1, end)
        self.ends = np.append(self.ends, end)
        return closing

    def trim(self, now: float, max_report_windows: int, horizon: float, judging: bool) -> None:
        """Drop the metrics of windows older than the last `max_report_windows`, forget windows
        whose label coverage is final (older than the coverage horizon, and judged if judged at
        all), and merge old windows beyond `MAX_TRACKED_WINDOWS`."""
        windows = self.windows
        old = self.open.index - max_report_windows
        for window in windows:
            if window.index >= old:
                break
            if window.index >= self.trimmed:
                window.metrics = None
        self.trimmed = max(self.trimmed, old)
        dropped = 0
        while len(windows) > max_report_windows:
            head = windows[0]
            if (head.judged or not judging) and head.end <= now - horizon:
                self.tracked_from = windows.popleft().end
                dropped += 1
            elif len(windows) > MAX_TRACKED_WINDOWS and self._merge_once(old):
                continue
            else:
                break
        if dropped:
            self.ends = self.ends[dropped:]

    def _merge_once(self, old: int) -> bool:
        """Merge the adjacent pair of windows below index `old` that covers the fewest original
        windows (the oldest such pair on a tie); False when no pair can merge."""
        windows = self.windows
        best, best_span = -1, math.inf
        for i in range(len(windows) - 1):
            a, b = windows[i], windows[i + 1]
            if b.index >= old:
                break
            if a.judged != b.judged:  # a judged window's predictions must not be judged again
                continue
            following = windows[i + 2].index if i + 2 < len(windows) else self.open.index
            span = following - a.index
            if span < best_span:
                best, best_span = i, span
        if best < 0:
            return False
        a, b = windows[best], windows[best + 1]
        a.end = b.end
        a.predictions += b.predictions
        a.labelled += b.labelled
        a.loss += b.loss
        a.estimate = None
        for version, stats in b.serving.items():  # empty once closed; kept for completeness
            a.serving.setdefault(version, ServingStats()).merge(stats)
        del windows[best + 1]
        self.ends = np.delete(self.ends, best)
        return True

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """The ledger's part of the evaluator's state (its keys and order are the format's)."""
        return {
            "windows": [w.to_state() for w in self.windows],
            "open": self.open.to_state(),
            "tracked_from": finite(self.tracked_from),
            "trimmed": self.trimmed,
            "first_time": finite(self.first_time),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.windows = deque(Window.from_state(w) for w in state["windows"])
        self.open = Window.from_state(state["open"])
        self.ends = np.asarray([w.end for w in self.windows], dtype=np.float64)
        self.tracked_from = -math.inf if state["tracked_from"] is None else state["tracked_from"]
        self.trimmed = state["trimmed"]
        self.cbpe_from = self.open.index
        self.first_time = math.inf if state["first_time"] is None else state["first_time"]
