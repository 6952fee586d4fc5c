"""Bernoulli CUSUM: a rise in a 0/1 error rate, found at the first values that show it.

The reference gives the baseline error rate p0. Each joined outcome adds the log-likelihood
ratio of "the rate is now p1" against "it is still p0", where p1 is p0 with its odds multiplied
by `odds_ratio` (the smallest rise worth catching quickly):

    x = 1 (wrong):   + log(p1 / p0)
    x = 0 (right):   + log((1 - p1) / (1 - p0))     (negative)

and the CUSUM S = max(0, S + increment) alarms when it reaches its limit, calibrated by a block
bootstrap of the reference so that a stationary error stream alarms once per `run_length`
outcomes on average (`monitor.detectors.calibration`). This is the optimal detector (Moustakides)
for a jump from p0 to p1, and stays good for jumps near it; the likelihood ratio only ever grows
with the error rate, so it cannot alarm on an improvement. Values between 0 and 1 (a soft error
such as a Brier loss) are accepted and interpolate the two increments.

A bank: `odds_ratio` may be a list, one CUSUM per ratio side by side (a geometric grid such as
[1.5, 2.5, 4.5]), so a rise of any size meets a CUSUM tuned near it and the size need not be
known in advance. The components share the budget equally (each is calibrated to
`run_length x ratios`, as every multi-component CUSUM here is); the detector alarms when any
reaches its limit, and the alarm names the component furthest past its limit as the rise that
fits best (`best_fit_odds_ratio`, `best_fit_error_rate`). Measured at run length 6e6 (drift-bench's
error check), 5,000-outcome references, 8-10 seeds: against the single ratio 1.5, [1.5, 2.5, 4.5]
finds odds x3 rises 1.4-3x sooner (0.10 -> 0.25: 232 -> 127 outcomes; 0.02 -> 0.058: 1,677 -> 564),
odds x6-x12 rises 2-5x sooner, and rises of odds x1.25-1.5 10-37% later (each component has a
third of the budget); on drift-bench's error family (0.10 -> 0.12, 0.15, 0.20 and ramps) it is 6%
later, 2,733 against 2,582 outcomes (bench/results/error-stream-2026-12-06.md). Below odds x1.5
a 5,000-outcome reference is the limit, not the grid: its baseline's own error (+-4% of 10%)
makes a CUSUM for x1.2 need a limit of 25 at run length 6e6, where a known baseline needs 10.

>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> reference = (rng.random(5000) < 0.10).astype(float)
>>> detector = BernoulliCusum().fit(reference, run_length=100_000, window_size=1000, seed=0)
>>> stream = (rng.random(4000) < np.r_[np.full(2000, 0.10), np.full(2000, 0.20)]).astype(float)
>>> detector.update_many(stream)[:1]   # the error rate doubles at position 2000
[2183]
>>> round(detector.baseline_rate, 4), round(detector.threshold, 2)
(0.1006, 7.62)
>>> jump = (rng.random(3000) < np.r_[np.full(2000, 0.10), np.full(1000, 0.45)]).astype(float)
>>> single = BernoulliCusum().fit(reference, run_length=100_000, window_size=1000, seed=0)
>>> bank = BernoulliCusum([1.5, 2.5, 4.5]).fit(reference, run_length=100_000, window_size=1000, seed=0)
>>> single.update_many(jump)[:1], bank.update_many(jump)[:1]   # 0.10 -> 0.45 at position 2000
([2042], [2013])
>>> bank.alarm_results[0].details["best_fit_error_rate"]
0.334813
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from monitor.detectors import base, calibration
from monitor.detectors._common import CusumDetector, check_range, check_run_length, finite
from monitor.detectors.base import DataKind
from monitor.detectors.registry import register

MAX_RATIOS = 16
"""Components of a bank at most (each costs a column of increments)."""


def _rates(p0: np.ndarray, odds_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Increments for a wrong (1) and a right (0) outcome, given baseline rate(s) p0."""
    odds = p0 / (1 - p0) * odds_ratio
    p1 = odds / (1 + odds)
    return np.log(p1 / p0), np.log((1 - p1) / (1 - p0))


@register
class BernoulliCusum(CusumDetector):
    """CUSUM for an increase of the error rate of a 0/1 (or [0, 1]) error stream.

    Parameters
    ----------
    odds_ratio
        The rise detected fastest, as a multiple of the baseline odds p/(1-p): 1.5 turns a 10%
        error rate into 14.3%. A smaller ratio is not faster on small rises with a 5,000-outcome
        reference: the baseline's own estimation error then needs a much higher limit. A list of
        ratios (at most `MAX_RATIOS`, each above 1) runs a bank of CUSUMs, one per ratio.
    """

    name = "bernoulli_cusum"
    accepts = frozenset({DataKind.error})
    component_names = ("error_rate_up",)

    def __init__(self, odds_ratio: float | Sequence[float] = 1.5):
        ratios = [odds_ratio] if isinstance(odds_ratio, int | float) else list(odds_ratio)
        if not ratios or len(ratios) > MAX_RATIOS:
            raise ValueError(
                f"Invalid 'odds_ratio' {odds_ratio!r}. Valid values are: a number or 1 to {MAX_RATIOS} numbers"
            )
        checked = [check_range("odds_ratio", r, 1.0, 1000.0, low_open=True) for r in ratios]
        if len(set(checked)) != len(checked):
            raise ValueError(f"Invalid 'odds_ratio' {odds_ratio!r}: the ratios must differ")
        self.odds_ratios = np.asarray(sorted(checked))
        if len(checked) > 1:  # a bank: one component per ratio, e.g. error_rate_up_x1.5
            self.component_names = tuple(f"error_rate_up_x{r:g}" for r in self.odds_ratios)
        super().__init__(odds_ratio=odds_ratio if isinstance(odds_ratio, int | float) else checked)
        self.odds_ratio = float(self.odds_ratios[0])
        self.baseline_rate = float("nan")
        self._steps = np.zeros((2, len(self.odds_ratios)))  # increments for x = 1 (row 0) and x = 0 (row 1)

    def fit(
        self, reference: np.ndarray, *, run_length: float, window_size: int = 1000, seed: int = 0, **context: Any
    ) -> Self:
        check_run_length(run_length)
        ref = self._clean(finite(reference))
        if len(ref) < 10:
            raise ValueError(f"{self.name}: the reference needs at least 10 outcomes, got {len(ref)}")
        self.reference_size = len(ref)
        self.baseline_rate = float(self._rate(ref.mean(), len(ref)))
        self._steps = np.array(_rates(np.asarray(self.baseline_rate), self.odds_ratios))

        boot = calibration.Bootstrap(ref, seed=seed)
        # Each path is scored against the baseline re-estimated from its own resample of the
        # reference: the live detector's p0 is an estimate too.
        p0 = self._rate(boot.resample_means(ref, calibration.N_PATHS), len(ref))
        x = boot.paths(calibration.N_PATHS, calibration.PATH_LENGTH)
        x_cumulative = np.cumsum(x, axis=1)
        budget = run_length * len(self.odds_ratios)  # shared equally by the components
        limits = []
        for ratio in self.odds_ratios:
            up_b, down_b = _rates(p0, ratio)
            # increment = down + x * (up - down): slope and offset per path, f(x) = x
            limits.append(
                calibration.cusum_limit(ref, x, up_b - down_b, down_b, budget, boot.block, f_cumulative=x_cumulative)
            )
        self._set_limits(limits)
        return self

    @staticmethod
    def _rate(mean: float | np.ndarray, n: int) -> np.ndarray:
        """Error rate(s) from mean(s) over n outcomes, kept half an outcome off 0 and 1."""
        return np.clip(mean, 0.5 / n, 1 - 0.5 / n)

    def _clean(self, values: np.ndarray) -> np.ndarray:
        return np.clip(values, 0.0, 1.0)

    def _increments(self, values: np.ndarray) -> np.ndarray:
        up, down = self._steps
        return values[:, None] * (up - down) + down

    def _alarm_result(self, values: np.ndarray) -> base.TestResult:
        result = super()._alarm_result(values)
        if len(self.odds_ratios) > 1:  # which rise fits best: the component furthest past its limit
            ratio = float(self.odds_ratios[int(np.argmax(values / self.limits))])
            odds = self.baseline_rate / (1 - self.baseline_rate) * ratio
            result.details["best_fit_odds_ratio"] = ratio
            result.details["best_fit_error_rate"] = round(odds / (1 + odds), 6)
        return result

    def _fitted_state(self) -> dict[str, Any]:
        return {"baseline_rate": self.baseline_rate, "steps": self._steps.tolist()}

    def _load_fitted(self, state: dict[str, Any]) -> None:
        self.baseline_rate = float(state["baseline_rate"])
        self._steps = np.asarray(state["steps"], dtype=float)
        if not math.isfinite(self.baseline_rate) or self._steps.shape != (2, len(self.odds_ratios)):
            raise ValueError("bad bernoulli_cusum state")
