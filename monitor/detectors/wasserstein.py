"""Wasserstein (earth mover's) distance of a window from the reference, in reference standard
deviations (numeric), as Evidently reports it: the area between the two cumulative distributions,
here read on a grid of `n_bins - 1` reference quantiles plus the reference's range, and the
distance by which window values fall outside that range. Threshold calibrated on bootstrap
windows of the reference.

>>> import numpy as np
>>> rng = np.random.default_rng(2)
>>> test = Wasserstein().fit(rng.standard_normal(5000), run_length=100_000, window_size=500, seed=0)
>>> stream = np.r_[rng.standard_normal(2000), rng.standard_normal(2000) + 0.5]
>>> [i for i in range(0, 4000, 500) if test.test(stream[i : i + 500]).drifted]  # mean moves at 2000
[2000, 2500, 3000, 3500]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from monitor.detectors._window import NumericBinnedTest
from monitor.detectors.base import DataKind
from monitor.detectors.registry import register


@register
class Wasserstein(NumericBinnedTest):
    """First Wasserstein distance over the reference standard deviation, on a quantile grid."""

    name = "wasserstein"
    accepts = frozenset({DataKind.numeric})
    spread_power = 0.5

    def __init__(self, n_bins: int = 200):
        super().__init__(n_bins=n_bins)

    def _widths(self) -> np.ndarray:
        grid = np.concatenate([[self.low], self.edges, [self.high]])
        return np.diff(grid)

    def _compare(self, window_counts: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
        cdf_w = np.cumsum(window_counts, axis=1) / window_counts.sum(axis=1, keepdims=True)
        cdf_r = np.cumsum(reference_counts, axis=1) / reference_counts.sum(axis=1, keepdims=True)
        area = np.abs(cdf_w - cdf_r) @ self._widths()
        return area / (self.sd if self.sd > 0 else 1.0)

    def _statistic(self, window: np.ndarray) -> tuple[float, int, dict[str, Any]]:
        score, n, details = super()._statistic(window)
        if n == 0:
            return score, n, details
        values = np.asarray(window, dtype=float).ravel()
        values = values[np.isfinite(values)]
        outside = np.maximum(values - self.high, 0).sum() + np.maximum(self.low - values, 0).sum()
        return score + float(outside) / n / (self.sd if self.sd > 0 else 1.0), n, details
