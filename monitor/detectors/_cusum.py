"""Page's CUSUM, vectorised over a batch and over parallel components (shared by the CUSUMs).

S_t = max(0, S_{t-1} + x_t) equals C_t - min(-S_0, min_{s<=t} C_s) with C the cumulative sum of
the increments, so a batch is a cumsum and a running minimum. After an alarm every component
restarts at 0 and the rest of the batch is run again from there; the work after an alarm starts
on a short stretch and doubles until the next alarm, so a stream that alarms often costs
O(values), not O(values x alarms).

>>> inc = np.array([[1.0], [1.0], [-5.0], [2.0], [2.0], [2.0]])
>>> run_cusum(inc, np.zeros(1), np.array([3.0]))
([4], array([2.]), [array([4.])])
"""

from __future__ import annotations

import numpy as np

_FIRST_STRETCH = 64


def cusum_path(increments: np.ndarray, start: np.ndarray) -> np.ndarray:
    """S_t for every row of `increments` (time x components), from the state `start`."""
    cum = np.cumsum(increments, axis=0)
    floor = np.minimum(np.minimum.accumulate(cum, axis=0), -start)
    return cum - floor


def run_cusum(
    increments: np.ndarray, state: np.ndarray, limits: np.ndarray
) -> tuple[list[int], np.ndarray, list[np.ndarray]]:
    """Run the components (columns) from `state`; an alarm when any reaches its limit, then all
    restart at 0. Returns the alarm positions, the final state, and the components' values at
    each alarm (the evidence: after the restart the state no longer shows them)."""
    n = len(increments)
    alarms: list[int] = []
    at_alarm: list[np.ndarray] = []
    state = np.asarray(state, dtype=float).copy()
    pos = 0
    stretch = n
    while pos < n:
        end = min(n, pos + stretch)
        s = cusum_path(increments[pos:end], state)
        hit = (s >= limits).any(axis=1)
        if hit.any():
            first = int(np.argmax(hit))
            alarms.append(pos + first)
            at_alarm.append(s[first].copy())
            state = np.zeros_like(state)
            pos += first + 1
            stretch = _FIRST_STRETCH
        else:
            state = s[-1].copy()
            pos = end
            stretch *= 2
    return alarms, state, at_alarm
