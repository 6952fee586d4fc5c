"""CUSUM on a numeric feature: shifts of its mean (either way) and increases of its spread.

Values are winsorised at the reference's `clip_quantile` and `1 - clip_quantile` quantiles, then
standardised with the reference mean and standard deviation (of the winsorised values): z. Two
CUSUMs per entry of `mean_shifts` (a shift of delta standard deviations is caught fastest by
the allowance k = delta / 2):

    up:    S = max(0, S + z - k)          down:  S = max(0, S - z - k)

and, with `scale=True`, one on the squared standardised value w = z^2, standardised again with
its reference mean and deviation, for an increase of the spread:

    scale: S = max(0, S + (w - mean_w) / sd_w - scale_allowance)

The detector alarms when any component reaches its own limit (calibrated on the reference by a
block bootstrap, sharing the false-alarm budget equally; see `monitor.detectors.calibration`),
then all restart at 0. Winsorising keeps one extreme value from raising an alarm on its own, so
heavy-tailed features (Student-t, log-normal amounts) need no special care; a shift beyond the
reference's range still shows, as a run of values at the clip bound.

A constant reference gives a detector that never alarms (every value clips to the constant);
the data-quality out-of-range check covers such a feature.

>>> import numpy as np
>>> rng = np.random.default_rng(42)
>>> detector = Cusum().fit(rng.standard_normal(5000), run_length=100_000, window_size=1000, seed=0)
>>> stream = np.r_[rng.standard_normal(3000), rng.standard_normal(2000) + 0.5]
>>> detector.update_many(stream)[:1]   # the mean moves up half a standard deviation at 3000
[3070]
>>> sorted(detector.components())
['mean_down_0.25', 'mean_up_0.25', 'scale_up']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from monitor.detectors import calibration
from monitor.detectors._common import CusumDetector, check_range, check_run_length, finite
from monitor.detectors.base import DataKind
from monitor.detectors.registry import register

MIN_REFERENCE = 50
_PROFILE_KEYS = ("low", "high", "mean", "sd", "w_mean", "w_sd")


@register
class Cusum(CusumDetector):
    """Two-sided CUSUM for mean shifts plus a CUSUM for spread increases, robust to heavy tails.

    Parameters
    ----------
    mean_shifts
        Mean shifts, in reference standard deviations, to catch fastest (allowance = shift / 2);
        one up and one down CUSUM for each. A small shift catches small and gradual changes
        much sooner and large ones a little later.
    scale
        Also watch for an increase of the spread (variance).
    scale_allowance
        Allowance of the spread CUSUM, in standard deviations of the squared standardised value.
    clip_quantile
        Values are winsorised at this reference quantile and its mirror.
    """

    name = "cusum"
    accepts = frozenset({DataKind.numeric})

    def __init__(
        self,
        mean_shifts: tuple[float, ...] | list[float] | float = (0.25,),
        scale: bool = True,
        scale_allowance: float = 0.25,
        clip_quantile: float = 0.001,
    ):
        shifts = [mean_shifts] if isinstance(mean_shifts, int | float) else list(mean_shifts)
        if not 1 <= len(shifts) <= 4:
            raise ValueError(f"Invalid 'mean_shifts' {mean_shifts!r}. Valid values are: 1 to 4 positive numbers")
        shifts = [check_range("mean_shifts", s, 0.0, 100.0, low_open=True) for s in shifts]
        if not isinstance(scale, bool):
            raise ValueError(f"Invalid 'scale' {scale!r}. Valid values are: (True, False)")
        names = [f"mean_{side}_{s:g}" for s in shifts for side in ("up", "down")]
        self.component_names = tuple(names + (["scale_up"] if scale else []))
        super().__init__(mean_shifts=shifts, scale=scale, scale_allowance=scale_allowance, clip_quantile=clip_quantile)
        self.shifts = np.asarray(shifts)
        self.scale = scale
        self.scale_allowance = check_range("scale_allowance", scale_allowance, 0.0, 100.0)
        self.clip_quantile = check_range("clip_quantile", clip_quantile, 0.0, 0.1)
        self.profile: dict[str, float] = {}

    # -- the statistic ------------------------------------------------------------------------
    def _z_and_w(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.profile
        z = (np.clip(values, p["low"], p["high"]) - p["mean"]) / p["sd"]
        return z, (z * z - p["w_mean"]) / p["w_sd"]

    def _increments(self, values: np.ndarray) -> np.ndarray:
        z, w = self._z_and_w(values)
        k = self.shifts / 2
        cols = np.empty((len(values), len(self.component_names)))
        cols[:, 0 : 2 * len(k) : 2] = z[:, None] - k
        cols[:, 1 : 2 * len(k) : 2] = -z[:, None] - k
        if self.scale:
            cols[:, -1] = w - self.scale_allowance
        return cols

    def _bank_key(self) -> tuple[Any, ...]:
        return (tuple(self.shifts.tolist()), self.scale, self.scale_allowance)

    @classmethod
    def _usable_rows(cls, detectors: Sequence[CusumDetector], values: np.ndarray) -> np.ndarray:
        return np.isfinite(values.astype(float, copy=False)).all(axis=1)

    @classmethod
    def _bank_increments(cls, detectors: Sequence[CusumDetector], values: np.ndarray) -> np.ndarray:
        """`_increments` of many features at once (one row of `values` each, every value finite),
        transposed: the same operations on the same numbers, the profiles as columns."""
        first = detectors[0]
        assert isinstance(first, Cusum)
        profiles = np.array([[d.profile[key] for key in _PROFILE_KEYS] for d in detectors])  # type: ignore[attr-defined]
        low, high, mean, sd, w_mean, w_sd = (profiles[:, [j]] for j in range(len(_PROFILE_KEYS)))
        z = (np.clip(values.astype(float, copy=False), low, high) - mean) / sd
        k = first.shifts / 2
        width = len(first.component_names)
        out = np.empty((len(detectors), width, values.shape[1]))
        for j, allowance in enumerate(k):
            np.subtract(z, allowance, out=out[:, 2 * j])
            np.subtract(-z, allowance, out=out[:, 2 * j + 1])
        if first.scale:
            np.subtract((z * z - w_mean) / w_sd, first.scale_allowance, out=out[:, -1])
        return out.reshape(len(detectors) * width, values.shape[1])

    # -- fitting ------------------------------------------------------------------------------
    def fit(
        self, reference: np.ndarray, *, run_length: float, window_size: int = 1000, seed: int = 0, **context: Any
    ) -> Self:
        check_run_length(run_length)
        ref = finite(reference)
        if len(ref) < MIN_REFERENCE:
            raise ValueError(f"{self.name}: the reference needs at least {MIN_REFERENCE} values, got {len(ref)}")
        self.reference_size = len(ref)
        low, high = np.quantile(ref, [self.clip_quantile, 1 - self.clip_quantile])
        c = np.clip(ref, low, high)
        mean, sd = float(c.mean()), float(c.std())
        if not sd > 0:
            sd = 1.0  # constant reference: every value clips to it, the detector stays silent
        z2 = ((c - mean) / sd) ** 2
        w_mean, w_sd = float(z2.mean()), float(z2.std()) or 1.0
        self.profile = {"low": float(low), "high": float(high), "mean": mean, "sd": sd, "w_mean": w_mean, "w_sd": w_sd}

        boot = calibration.Bootstrap(ref, seed=seed)
        budget = run_length * len(self.component_names)  # shared equally by the components
        starts = boot.starts(calibration.N_PATHS, calibration.PATH_LENGTH)
        # Profiles re-estimated on independent resamples of the reference (see calibration).
        moments = boot.resample_means(np.column_stack([c, c * c, z2, z2 * z2]), calibration.N_PATHS)
        mean_b = moments[:, 0]
        sd_b = np.sqrt(np.maximum(moments[:, 1] - mean_b**2, 1e-300))
        w_mean_b = moments[:, 2]
        w_sd_b = np.sqrt(np.maximum(moments[:, 3] - w_mean_b**2, 1e-300))
        # (f on the reference, slope, offset) per component: z - k = c / sd - mean / sd - k, and -z - k
        components = [(c, sign / sd_b, -sign * mean_b / sd_b - k) for k in self.shifts / 2 for sign in (1.0, -1.0)]
        if self.scale:
            components.append((z2, 1.0 / w_sd_b, -w_mean_b / w_sd_b - self.scale_allowance))
        # The paths a slice at a time, each run by every component while it is in the cache.
        runs = [calibration.Excursions() for _ in components]
        length = calibration.PATH_LENGTH
        step = max(1, calibration.SLICE_VALUES // length)
        for first in range(0, calibration.N_PATHS, step):
            rows = slice(first, first + step)
            summed = f_cum = None
            for (f, slope, offset), run in zip(components, runs, strict=True):
                if f is not summed:  # the mean components share c's sums
                    f_cum = boot.gather(f, starts[rows], length)
                    np.cumsum(f_cum, axis=1, out=f_cum)
                    summed = f
                run.feed(f_cum, slope[rows], offset[rows])  # type: ignore[arg-type]
        limits = [
            calibration.cusum_limit(f, None, slope, offset, budget, boot.block, excursions=run)
            for (f, slope, offset), run in zip(components, runs, strict=True)
        ]
        self._set_limits(limits)
        return self

    def _fitted_state(self) -> dict[str, Any]:
        return dict(self.profile)

    def _load_fitted(self, state: dict[str, Any]) -> None:
        self.profile = {key: float(state[key]) for key in _PROFILE_KEYS}
