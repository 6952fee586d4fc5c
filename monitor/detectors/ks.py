"""Kolmogorov-Smirnov distance of a window from the reference distribution (numeric).

The largest gap between the window's and the reference's cumulative distributions, read at
`n_bins - 1` reference quantiles (a grid fine enough that the distance is within 1/n_bins of the
exact one, and the profile stays a few kilobytes). The threshold is not the KS test's p-value:
it is calibrated on bootstrap windows of the reference (`monitor.detectors._window`), which keeps
the false-alarm budget on autocorrelated or tied data where the textbook distribution is wrong.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> test = KS().fit(rng.standard_normal(5000), run_length=100_000, window_size=500, seed=0)
>>> stream = np.r_[rng.standard_normal(2000), rng.standard_normal(2000) * 1.5]
>>> [i for i in range(0, 4000, 500) if test.test(stream[i : i + 500]).drifted]  # spread grows at 2000
[2000, 2500, 3000, 3500]
"""

from __future__ import annotations

import numpy as np

from monitor.detectors._window import NumericBinnedTest
from monitor.detectors.base import DataKind
from monitor.detectors.registry import register


@register
class KS(NumericBinnedTest):
    """Two-sample Kolmogorov-Smirnov distance on a reference-quantile grid."""

    name = "ks"
    accepts = frozenset({DataKind.numeric})
    rows_apart = True
    spread_power = 0.5

    def __init__(self, n_bins: int = 200):
        super().__init__(n_bins=n_bins)

    def _compare(self, window_counts: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
        cdf_w = np.cumsum(window_counts, axis=1) / window_counts.sum(axis=1, keepdims=True)
        cdf_r = np.cumsum(reference_counts, axis=1) / reference_counts.sum(axis=1, keepdims=True)
        return np.abs(cdf_w - cdf_r).max(axis=1)
