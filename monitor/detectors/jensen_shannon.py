"""Jensen-Shannon distance between a window's category shares and the reference's (natural log,
as scipy and Evidently compute it): symmetric, bounded by sqrt(log 2), defined when a category
is absent from either side. Threshold calibrated on bootstrap windows of the reference.

>>> import numpy as np
>>> rng = np.random.default_rng(5)
>>> p = [0.40, 0.25, 0.15, 0.12, 0.08, 0.0]
>>> test = JensenShannon().fit(rng.choice(6, 5000, p=p), run_length=100_000, window_size=1000, n_categories=6)
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


def jensen_shannon_distance(window_counts: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
    p = window_counts / window_counts.sum(axis=1, keepdims=True)
    q = reference_counts / reference_counts.sum(axis=1, keepdims=True)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum(axis=1)
    return np.sqrt(np.maximum((kl_p + kl_q) / 2, 0.0))


@register
class JensenShannon(CategoryCountTest):
    """Jensen-Shannon distance of category shares, window against reference."""

    name = "jensen_shannon"
    accepts = frozenset({DataKind.categorical})
    spread_power = 0.5

    def __init__(self):
        super().__init__()

    def _compare(self, window_counts: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
        return jensen_shannon_distance(window_counts, reference_counts)
