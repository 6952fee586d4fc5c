"""Chi-square test of homogeneity between a window's category counts and the reference's.

Pearson's statistic for the 2 x K table (window, reference) x categories, over the categories
present in either: a value never seen in the reference (the last code) adds to it without
dividing by a zero expectation, and the reference's own sampling error is in the null
distribution, which is therefore the same for every window size. The threshold is calibrated on
bootstrap windows of the reference rather than read from the chi-square table, so it holds the
false-alarm budget when categories come in bursts.

>>> import numpy as np
>>> rng = np.random.default_rng(4)
>>> p = [0.40, 0.25, 0.15, 0.12, 0.08, 0.0]
>>> test = ChiSquare().fit(rng.choice(6, 5000, p=p), run_length=100_000, window_size=1000, n_categories=6)
>>> shifted = [0.30, 0.25, 0.15, 0.17, 0.13, 0.0]
>>> stream = np.r_[rng.choice(6, 3000, p=p), rng.choice(6, 3000, p=shifted)]
>>> [i for i in range(0, 6000, 1000) if test.test(stream[i : i + 1000]).drifted]  # shares move at 3000
[3000, 4000, 5000]
"""

from __future__ import annotations

import numpy as np

from monitor.detectors._window import CategoryCountTest
from monitor.detectors.base import DataKind
from monitor.detectors.registry import register


def homogeneity_chi_square(window_counts: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
    """Pearson chi-square of each row pair (window, reference) of counts, per row."""
    n = window_counts.sum(axis=1, keepdims=True)
    m = reference_counts.sum(axis=1, keepdims=True)
    total = window_counts + reference_counts
    with np.errstate(divide="ignore", invalid="ignore"):
        cells = (window_counts * m - reference_counts * n) ** 2 / (n * m * total)
    return np.where(total > 0, cells, 0.0).sum(axis=1)


@register
class ChiSquare(CategoryCountTest):
    """Chi-square homogeneity statistic, window against reference counts."""

    name = "chi_square"
    accepts = frozenset({DataKind.categorical})
    spread_power = 0.0

    def __init__(self):
        super().__init__()

    def _compare(self, window_counts: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
        return homogeneity_chi_square(window_counts, reference_counts)
