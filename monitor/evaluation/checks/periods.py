"""Loss sums per metric scope over the last `check_windows` windows, for the canary and slice checks.

Both checks compare a group's error (a version, a slice value) with another's over the same
recent outcomes; they read count, sum and sum of squares of the loss per scope, which this
module keeps per window (`period`) in a ring of the last `check_windows` windows.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from monitor.evaluation.significance import LossStats


class LossPeriods:
    """Count, loss sum and squared-loss sum per scope (3 x scopes) for the open window and the
    last `check_windows` closed ones."""

    def __init__(self, check_windows: int):
        self.check_windows = check_windows
        self.period = np.zeros((3, 1))
        self.ring: deque[np.ndarray] = deque(maxlen=check_windows)

    def add(self, groups: np.ndarray, loss: np.ndarray, scopes: int) -> None:
        """Fold in losses, one per (group, row) pair already gathered (`loss` indexed by rows)."""
        if self.period.shape[1] < scopes:
            self.period = np.pad(self.period, [(0, 0), (0, scopes - self.period.shape[1])])
        self.period[0] += np.bincount(groups, minlength=scopes)
        self.period[1] += np.bincount(groups, weights=loss, minlength=scopes)
        self.period[2] += np.bincount(groups, weights=loss * loss, minlength=scopes)

    def close(self, scopes: int) -> np.ndarray:
        """End the open window's period; returns the sums over the ring (3 x scopes)."""
        self.ring.append(self.period)
        self.period = np.zeros((3, scopes))
        total = np.zeros((3, scopes))
        for period in self.ring:
            total[:, : period.shape[1]] += period
        return total

    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.ring)

    def state(self) -> dict[str, Any]:
        return {"period": self.period.tolist(), "ring": [p.tolist() for p in self.ring]}

    def restore(self, state: dict[str, Any]) -> None:
        self.period = np.asarray(state["period"], dtype=np.float64).reshape(3, -1)
        self.ring = deque((np.asarray(p, dtype=np.float64).reshape(3, -1) for p in state["ring"]),
                          maxlen=self.check_windows)  # fmt: skip


def stats(horizon: np.ndarray, scope: int) -> LossStats:
    """One scope's loss statistics from `LossPeriods.close`."""
    if scope >= horizon.shape[1]:
        return LossStats(0, 0, 0)
    n, total, total_sq = horizon[:, scope]
    return LossStats(float(n), float(total), float(total_sq))
