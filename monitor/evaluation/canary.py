"""Canary against baseline: is a new version of a model significantly worse than the old one?

When two (or more) versions of one model serve side by side, their joined outcomes over the same
recent period are compared on the error rate (classification) or the mean absolute error
(regression). A version regresses only when both hold:

* it is significantly worse: one-sided pooled two-proportion z-test (Welch's z for absolute
  errors) at `alpha / (number of versions compared)`, alpha being the check's share of the
  false-alarm budget;
* it is worse by more than `margin`: error rate higher by more than `margin` (absolute), or MAE
  higher by more than `margin` times the baseline's MAE (relative, since MAE has units).

Large samples make tiny differences significant, hence the margin; small samples make large
differences noisy, hence the test and `min_samples` per version.

The baseline is the configured `baseline_version`, or else the version with the most outcomes.

>>> from monitor.evaluation.significance import LossStats
>>> stats = {"v1": LossStats(5000, 500, 500), "v2": LossStats(600, 96, 96)}   # 10% vs 16%
>>> [r.regressed for r in compare_versions(stats, alpha=1e-4, margin=0.02, min_samples=200)]
[True]
>>> stats["v2"] = LossStats(600, 66, 66)                                     # 10% vs 11%
>>> [r.regressed for r in compare_versions(stats, alpha=1e-4, margin=0.02, min_samples=200)]
[False]
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.evaluation.significance import LossStats, difference_test


@dataclass(frozen=True)
class CanaryResult:
    baseline: str
    canary: str
    baseline_n: int
    canary_n: int
    baseline_metric: float
    canary_metric: float
    difference: float
    z: float
    p_value: float
    alpha: float
    """Per-comparison level applied (the check's alpha over the versions compared)."""
    margin: float
    regressed: bool


def compare_versions(
    stats: dict[str, LossStats],
    *,
    alpha: float,
    margin: float,
    min_samples: int,
    baseline: str | None = None,
    proportion: bool = True,
) -> list[CanaryResult]:
    """One result per non-baseline version with at least `min_samples` outcomes (and a baseline
    with as many); an empty list when there is nothing to compare."""
    if baseline is None or baseline not in stats:
        if baseline is not None:
            return []
        baseline = max(stats, key=lambda v: (stats[v].n, v), default=None)
        if baseline is None:
            return []
    base = stats[baseline]
    if base.n < min_samples:
        return []
    canaries = [v for v, s in stats.items() if v != baseline and s.n >= min_samples]
    if not canaries:
        return []
    level = alpha / len(canaries)
    results = []
    for version in sorted(canaries):
        other = stats[version]
        z, p_value = difference_test(base, other, proportion=proportion)
        difference = other.mean - base.mean
        bound = margin if proportion else margin * base.mean
        regressed = bool(p_value < level and difference > bound)
        results.append(
            CanaryResult(
                baseline,
                version,
                int(base.n),
                int(other.n),
                base.mean,
                other.mean,
                difference,
                z,
                p_value,
                level,
                margin,
                regressed,
            )  # fmt: skip
        )
    return results
