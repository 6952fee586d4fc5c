"""Slice gaps: a segment (country, device, ...) doing worse than the model overall.

For each slice value with at least `min_samples` joined outcomes in the period, its error rate
(classification) or mean absolute error (regression) is compared with the overall one. A slice
regresses only when both hold:

* its metric is worse than the overall one by more than `margin` (absolute for error rates,
  relative to the overall MAE for regression);
* it is significantly worse than the rest of the traffic (the overall minus the slice, so the two
  samples are independent): one-sided two-proportion z-test (Welch's z for absolute errors) at
  `alpha / (number of slices tested)` (Bonferroni), alpha being the check's share of the
  false-alarm budget.

Slices below `min_samples` are not tested at all, so a handful of unlucky outcomes in a small
slice never pages anyone. The overflow bucket `other` (values over the cap) is not tested.

>>> from monitor.evaluation.significance import LossStats
>>> overall = LossStats(10_000, 1_000, 1_000)
>>> slices = {"country=DE": LossStats(1_000, 200, 200), "country=FR": LossStats(50, 20, 20)}
>>> [(r.slice, r.regressed) for r in compare_slices(overall, slices, alpha=1e-4, margin=0.05, min_samples=200)]
[('country=DE', True)]
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.evaluation.labels import OTHER
from monitor.evaluation.significance import LossStats, difference_test


@dataclass(frozen=True)
class SliceResult:
    slice: str
    """`name=value`."""
    n: int
    metric: float
    overall_metric: float
    rest_metric: float
    difference: float
    """Slice metric minus the overall one."""
    z: float
    p_value: float
    alpha: float
    margin: float
    regressed: bool


def compare_slices(
    overall: LossStats,
    slices: dict[str, LossStats],
    *,
    alpha: float,
    margin: float,
    min_samples: int,
    proportion: bool = True,
) -> list[SliceResult]:
    """One result per slice (`name=value`) with enough samples, in name order."""
    tested = {
        key: stats
        for key, stats in slices.items()
        if stats.n >= min_samples and key.split("=", 1)[-1] != OTHER and overall.n - stats.n >= 1
    }
    if not tested:
        return []
    level = alpha / len(tested)
    results = []
    for key in sorted(tested):
        stats = tested[key]
        rest = overall.minus(stats)
        z, p_value = difference_test(rest, stats, proportion=proportion)
        difference = stats.mean - overall.mean
        bound = margin if proportion else margin * overall.mean
        regressed = bool(p_value < level and difference > bound)
        results.append(
            SliceResult(
                key, int(stats.n), stats.mean, overall.mean, rest.mean, difference, z, p_value, level, margin, regressed
            )  # fmt: skip
        )
    return results
