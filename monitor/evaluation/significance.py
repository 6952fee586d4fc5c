"""Two-sample tests on a mean loss (0/1 error or absolute error), for canary and slice checks.

A group's outcomes are summarised by `LossStats` (count, sum and sum of squares of the loss), so
groups merge and subtract exactly and the tests need no raw data:

* 0/1 errors: the pooled two-proportion z-test;
* absolute errors (regression): Welch's z-test on the means (normal approximation, fine for the
  hundreds of samples the checks require).

Both are one-sided: is `other` worse (a higher mean loss) than `baseline`?

>>> base, canary = LossStats(2000, 200, 200), LossStats(500, 75, 75)   # 10% vs 15% errors
>>> z, p = difference_test(base, canary, proportion=True)
>>> round(z, 3), round(p, 5)
(3.196, 0.0007)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.special import ndtr, ndtri


def z_quantile(alpha: float) -> float:
    """The z exceeded with probability `alpha` by a standard normal (one-sided).

    >>> round(z_quantile(0.05), 4), round(z_quantile(1e-9), 3)
    (1.6449, 5.998)
    """
    return float(-ndtri(alpha))


def upper_tail(z: float) -> float:
    """P(Z > z) for a standard normal."""
    return float(ndtr(-z))


@dataclass(frozen=True)
class LossStats:
    """Count, sum and sum of squares of a loss over a group of outcomes."""

    n: float
    total: float
    total_sq: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def variance(self) -> float:
        if self.n < 2:
            return math.nan
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))

    def minus(self, other: LossStats) -> LossStats:
        return LossStats(self.n - other.n, self.total - other.total, self.total_sq - other.total_sq)


def difference_test(baseline: LossStats, other: LossStats, *, proportion: bool) -> tuple[float, float]:
    """z and one-sided p-value of "other's mean loss is higher than baseline's"."""
    if baseline.n < 1 or other.n < 1:
        return math.nan, math.nan
    difference = other.mean - baseline.mean
    if proportion:
        pooled = (baseline.total + other.total) / (baseline.n + other.n)
        se = math.sqrt(pooled * (1 - pooled) * (1 / baseline.n + 1 / other.n))
    else:
        se = math.sqrt(baseline.variance / baseline.n + other.variance / other.n)
    if not se > 0:
        z = 0.0 if difference == 0 else math.copysign(math.inf, difference)
    else:
        z = difference / se
    return z, upper_tail(z)
