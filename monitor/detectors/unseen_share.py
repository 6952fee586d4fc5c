"""Share of a window's values in categories the reference never showed (the last code).

A reference without such values cannot show how often they come by chance, so the threshold is
the larger of (a) the bootstrap quantile, when the reference holds some, and (b) the share a
Poisson count with the Good-Turing rate of unseen values (categories seen once in the reference,
per reference value; half a value if none) exceeds with the window's false-alarm probability.
With 5,000 reference values, none seen once, and windows of 1,000, three unseen values in a
window raise it at a budget of one false alarm per 250,000 values.

>>> import numpy as np
>>> rng = np.random.default_rng(6)
>>> p = [0.40, 0.25, 0.15, 0.12, 0.08, 0.0]
>>> test = UnseenShare().fit(rng.choice(6, 5000, p=p), run_length=250_000, window_size=1000, n_categories=6)
>>> test.threshold
0.002
>>> stream = np.r_[rng.choice(6, 2000, p=p), rng.choice(6, 2000, p=[0.39, 0.25, 0.15, 0.12, 0.08, 0.01])]
>>> [i for i in range(0, 4000, 1000) if test.test(stream[i : i + 1000]).drifted]  # 1% new values from 2000
[2000, 3000]
"""

from __future__ import annotations

import functools
from typing import Any, Self

import numpy as np
from scipy import stats

from monitor.detectors._window import CategoryCountTest
from monitor.detectors.base import DataKind
from monitor.detectors.registry import register


@functools.lru_cache(maxsize=256)
def _poisson_share(n: int, rate: float, exceedance: float) -> float:
    # scipy's isf costs ~0.3 ms; windows of one size ask for the same value every time.
    return float(stats.poisson.isf(exceedance, n * rate)) / n


@register
class UnseenShare(CategoryCountTest):
    """Share of the window in the "unseen" code; Poisson and bootstrap calibrated."""

    name = "unseen_share"
    accepts = frozenset({DataKind.categorical})
    spread_power = 0.5

    def __init__(self):
        super().__init__()
        self.unseen_rate = 0.0
        self.exceedance = 0.0

    def fit(self, reference: np.ndarray, *, run_length: float, window_size: int, seed: int = 0, **context: Any) -> Self:
        super().fit(reference, run_length=run_length, window_size=window_size, seed=seed, **context)
        counts = self.reference_counts
        n = counts.sum()
        self.unseen_rate = max(float(counts[-1]), float(np.sum(counts[:-1] == 1)), 0.5) / n
        self.exceedance = min(0.5, window_size / run_length)
        self.center = float(counts[-1] / n)
        self.threshold = max(self.threshold, self._poisson_share(window_size))
        return self

    def _poisson_share(self, n: int) -> float:
        """Share whose count a Poisson(n * rate) exceeds with probability `exceedance`."""
        return _poisson_share(n, self.unseen_rate, self.exceedance)

    def threshold_for(self, n: int) -> float:
        return max(super().threshold_for(n), self._poisson_share(n))

    def _compare(self, window_counts: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
        return window_counts[:, -1] / window_counts.sum(axis=1)

    def _profile_state(self) -> dict[str, Any]:
        return {
            **super()._profile_state(),
            "unseen_rate": float(self.unseen_rate),
            "exceedance": float(self.exceedance),
        }

    def _load_profile(self, state: dict[str, Any]) -> None:
        super()._load_profile(state)
        self.unseen_rate = float(state["unseen_rate"])
        self.exceedance = float(state["exceedance"])
