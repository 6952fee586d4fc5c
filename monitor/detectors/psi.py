"""Population stability index of a window against the reference (numeric), on reference-quantile
bins (deciles by default), as in credit-risk monitoring: sum over bins of
(window share - reference share) * log(window share / reference share), empty bins counted as
1e-4 (Evidently's convention). The threshold is calibrated on bootstrap windows of the reference,
not the customary 0.1 / 0.25, so it holds the false-alarm budget for any window size.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> test = PSI().fit(rng.standard_normal(5000), run_length=100_000, window_size=500, seed=0)
>>> stream = np.r_[rng.standard_normal(2000), rng.standard_normal(2000) + 0.5]
>>> [i for i in range(0, 4000, 500) if test.test(stream[i : i + 500]).drifted]  # mean moves at 2000
[2000, 2500, 3000, 3500]
"""

from __future__ import annotations

import numpy as np

from monitor.detectors._window import NumericBinnedTest
from monitor.detectors.base import DataKind
from monitor.detectors.registry import register

EMPTY_SHARE = 1e-4


def psi(window_counts: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
    w = np.maximum(window_counts / window_counts.sum(axis=1, keepdims=True), EMPTY_SHARE)
    r = np.maximum(reference_counts / reference_counts.sum(axis=1, keepdims=True), EMPTY_SHARE)
    return np.sum((w - r) * np.log(w / r), axis=1)


@register
class PSI(NumericBinnedTest):
    """Population stability index on reference-quantile bins."""

    name = "psi"
    accepts = frozenset({DataKind.numeric})
    rows_apart = True
    spread_power = 1.0

    def __init__(self, n_bins: int = 10):
        super().__init__(n_bins=n_bins)

    def _compare(self, window_counts: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
        return psi(window_counts, reference_counts)
