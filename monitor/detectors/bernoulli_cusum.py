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

>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> reference = (rng.random(5000) < 0.10).astype(float)
>>> detector = BernoulliCusum().fit(reference, run_length=100_000, window_size=1000, seed=0)
>>> stream = (rng.random(4000) < np.r_[np.full(2000, 0.10), np.full(2000, 0.20)]).astype(float)
>>> detector.update_many(stream)[:1]   # the error rate doubles at position 2000
[2183]
>>> round(detector.baseline_rate, 4), round(detector.threshold, 2)
(0.1006, 7.62)
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np

from monitor.detectors import calibration
from monitor.detectors._common import CusumDetector, check_range, check_run_length, finite
from monitor.detectors.base import DataKind
from monitor.detectors.registry import register


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
        reference: the baseline's own estimation error then needs a much higher limit.
    """

    name = "bernoulli_cusum"
    accepts = frozenset({DataKind.error})
    component_names = ("error_rate_up",)

    def __init__(self, odds_ratio: float = 1.5):
        super().__init__(odds_ratio=odds_ratio)
        self.odds_ratio = check_range("odds_ratio", odds_ratio, 1.0, 1000.0, low_open=True)
        self.odds_ratios = np.asarray([self.odds_ratio])
        self.baseline_rate = float("nan")
        self._steps = np.zeros((2, 1))  # increments for x = 1 (row 0) and x = 0 (row 1)

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
        up_b, down_b = _rates(p0, self.odds_ratio)
        # increment = down + x * (up - down): slope and offset per path, f(x) = x
        self._set_limits([calibration.cusum_limit(ref, x, up_b - down_b, down_b, run_length, boot.block)])
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

    def _fitted_state(self) -> dict[str, Any]:
        return {"baseline_rate": self.baseline_rate, "steps": self._steps.tolist()}

    def _load_fitted(self, state: dict[str, Any]) -> None:
        self.baseline_rate = float(state["baseline_rate"])
        self._steps = np.asarray(state["steps"], dtype=float)
        if not math.isfinite(self.baseline_rate) or self._steps.shape != (2, len(self.odds_ratios)):
            raise ValueError("bad bernoulli_cusum state")
