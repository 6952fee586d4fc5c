"""Bounded-memory statistics of one feature over a window or a reference.

Numeric features keep count, nulls, mean and variance (Chan's parallel update, so batches merge
exactly), min and max, and a KLL quantile sketch (Apache DataSketches: rank error about 1.3% at
k=200, a few KiB whatever the count). Categorical features keep frequencies of at most
`max_categories` distinct values; values of further categories are only counted
(`overflow_count`), so memory stays bounded under a flood of new values.

>>> import numpy as np
>>> stats = NumericStats()
>>> stats.update(np.array([1.0, 2.0, 3.0, 4.0]), nulls=1)
>>> stats.count, stats.nulls, stats.mean, round(stats.std, 4), stats.minimum, stats.maximum
(5, 1, 2.5, 1.291, 1.0, 4.0)
>>> cats = CategoryStats(max_categories=2)
>>> cats.update(["a", "b", "a", "c", None])
>>> cats.frequencies, cats.overflow_count, cats.nulls
({'a': 2, 'b': 1}, 1, 1)
"""

from __future__ import annotations

import base64
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from datasketches import kll_doubles_sketch

KLL_K = 200
"""KLL accuracy parameter: normalized rank error about 1.65/k^0.9 (1.3% at 200)."""

SKETCH_PENDING = 8192
"""Values a `NumericStats` holds before they go into its sketch. The sketch costs about 30 ns a
value and is read only for evidence, summaries and state, so a window that closes before this
many values (the default windows of 1,000 events) and raises nothing never builds it. The
values reach the sketch in the order they came, as they would one batch at a time; KLL's
compactions are randomised, so its quantiles were never reproducible to the bit anyway."""


class NumericStats:
    """Count, nulls, type mismatches, mean, variance, min, max and a quantile sketch."""

    __slots__ = (
        "count",
        "nulls",
        "mismatches",
        "_n",
        "mean",
        "_m2",
        "minimum",
        "maximum",
        "_sketch",
        "_pending",
        "_held",
    )

    def __init__(self) -> None:
        self.count = 0
        """Every event seen, null or not."""
        self.nulls = 0
        self.mismatches = 0
        """Values of another type (a string where a number was expected)."""
        self._n = 0
        self.mean = 0.0
        self._m2 = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf
        self._sketch = kll_doubles_sketch(KLL_K)
        self._pending: list[np.ndarray] = []
        self._held = 0

    @property
    def sketch(self) -> kll_doubles_sketch:
        """The quantile sketch of every value so far (held values go in first)."""
        if self._pending:
            values = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
            self._sketch.update(values)
            self._pending, self._held = [], 0
        return self._sketch

    @sketch.setter
    def sketch(self, sketch: kll_doubles_sketch) -> None:
        self._sketch, self._pending, self._held = sketch, [], 0

    def update(self, values: np.ndarray, nulls: int = 0, mismatches: int = 0) -> None:
        """Add a batch of non-null numeric values, and the nulls and mismatches beside them."""
        self.count += nulls + mismatches
        self.nulls += nulls
        self.mismatches += mismatches
        if len(values) == 0:
            return
        mean_b = float(values.mean())
        m2_b = float(((values - mean_b) ** 2).sum())
        self.add_summary(values, mean_b, m2_b, float(values.min()), float(values.max()))

    def add_summary(self, values: np.ndarray, mean_b: float, m2_b: float, low: float, high: float) -> None:
        """Merge a batch of non-null values whose mean, sum of squared deviations, minimum and
        maximum were taken elsewhere (several features at once), as `update` would (counts of
        nulls and mismatches: none)."""
        n_b = len(values)
        if n_b == 0:
            return
        self.count += n_b
        n_a, n = self._n, self._n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self._m2 += m2_b + delta * delta * n_a * n_b / n
        self._n = n
        self.minimum = min(self.minimum, low)
        self.maximum = max(self.maximum, high)
        self.hold(values)

    def hold(self, values: np.ndarray) -> None:
        """Keep `values` (not to be changed afterwards) for the sketch, which takes them when read
        or when `SKETCH_PENDING` are held."""
        self._pending.append(values)
        self._held += len(values)
        if self._held >= SKETCH_PENDING:
            _ = self.sketch

    @property
    def values_count(self) -> int:
        """Non-null numeric values seen."""
        return self._n

    @property
    def variance(self) -> float:
        return self._m2 / (self._n - 1) if self._n > 1 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    def quantiles(self, ranks: Iterable[float]) -> list[float]:
        if self._n == 0:
            return [math.nan for _ in ranks]
        return [float(q) for q in self.sketch.get_quantiles(list(ranks))]

    def summary(self) -> dict[str, float | int]:
        q = self.quantiles([0.05, 0.25, 0.5, 0.75, 0.95])
        return {
            "count": self.count,
            "nulls": self.nulls,
            "mismatches": self.mismatches,
            "mean": self.mean,
            "std": self.std,
            "min": self.minimum if self._n else math.nan,
            "max": self.maximum if self._n else math.nan,
            "p05": q[0],
            "p25": q[1],
            "p50": q[2],
            "p75": q[3],
            "p95": q[4],
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "nulls": self.nulls,
            "mismatches": self.mismatches,
            "n": self._n,
            "mean": self.mean,
            "m2": self._m2,
            "min": self.minimum if self._n else None,
            "max": self.maximum if self._n else None,
            "sketch": base64.b64encode(self.sketch.serialize()).decode("ascii"),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NumericStats:
        stats = cls()
        stats.count, stats.nulls, stats.mismatches = state["count"], state["nulls"], state["mismatches"]
        stats._n, stats.mean, stats._m2 = state["n"], state["mean"], state["m2"]
        stats.minimum = math.inf if state["min"] is None else state["min"]
        stats.maximum = -math.inf if state["max"] is None else state["max"]
        stats.sketch = kll_doubles_sketch.deserialize(base64.b64decode(state["sketch"]))
        return stats


class CategoryStats:
    """Frequencies of at most `max_categories` distinct values, plus nulls and overflow."""

    __slots__ = ("max_categories", "count", "nulls", "frequencies", "overflow_count")

    def __init__(self, max_categories: int = 100) -> None:
        self.max_categories = max_categories
        self.count = 0
        self.nulls = 0
        self.frequencies: dict[str, int] = {}
        self.overflow_count = 0
        """Values not counted because `max_categories` distinct values were already kept."""

    def update(self, values: Iterable[str | None]) -> None:
        self.add_counts(Counter(values))

    def add_counts(self, counts: Mapping[str | None, int]) -> None:
        """Add occurrences counted elsewhere (value -> count; None counts nulls)."""
        nulls = counts.get(None, 0)
        self.nulls += nulls
        self.count += nulls
        frequencies = self.frequencies
        for value, n in counts.items():
            if value is None:
                continue
            self.count += n
            if value in frequencies:
                frequencies[value] += n
            elif len(frequencies) < self.max_categories:
                frequencies[value] = n
            else:
                self.overflow_count += n

    def summary(self) -> dict[str, Any]:
        top = sorted(self.frequencies.items(), key=lambda item: -item[1])[:10]
        return {
            "count": self.count,
            "nulls": self.nulls,
            "distinct": len(self.frequencies),
            "overflow": self.overflow_count,
            "top": [[name, n] for name, n in top],
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "max_categories": self.max_categories,
            "count": self.count,
            "nulls": self.nulls,
            "frequencies": self.frequencies,
            "overflow": self.overflow_count,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CategoryStats:
        stats = cls(state["max_categories"])
        stats.count, stats.nulls = state["count"], state["nulls"]
        stats.frequencies = dict(state["frequencies"])
        stats.overflow_count = state["overflow"]
        return stats
