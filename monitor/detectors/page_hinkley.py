"""Page-Hinkley (river), on values standardised with the reference and warmed up with it.

Two CUSUMs of the deviations from the running mean (less `delta`), with forgetting `alpha`; an
alarm when either exceeds `threshold` (reference standard deviations, since values are
standardised). It adapts its mean, so it is not calibrated to the false-alarm budget (see
`monitor.detectors._river`); `threshold` is river's. State: the running mean and the sums.

>>> import numpy as np
>>> rng = np.random.default_rng(10)
>>> detector = PageHinkley().fit(rng.standard_normal(5000), run_length=100_000, window_size=1000)
>>> alarms = detector.update_many(np.r_[rng.standard_normal(3000), rng.standard_normal(2000) + 1.0])
>>> [a for a in alarms if a >= 3000][:1]   # the mean moves up one standard deviation at 3000
[3040]
>>> len([a for a in alarms if a < 3000])   # river's defaults: a false alarm every ~2,000 values
1
"""

from __future__ import annotations

from typing import Any

from river import drift

from monitor.detectors._common import check_choice, check_range
from monitor.detectors._river import RiverWrapper
from monitor.detectors.base import DataKind
from monitor.detectors.registry import register

_FIELDS = ("_sum_increase", "_sum_decrease", "_min_increase", "_max_decrease")


@register
class PageHinkley(RiverWrapper):
    """river.drift.PageHinkley with river's parameters."""

    name = "page_hinkley"
    accepts = frozenset({DataKind.numeric})
    _VALID_MODES = ("up", "down", "both")

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
    ):
        check_choice("mode", mode, self._VALID_MODES)
        check_range("delta", delta, 0.0, 1e6)
        check_range("threshold", threshold, 0.0, 1e9, low_open=True)
        check_range("alpha", alpha, 0.0, 1.0, low_open=True)
        if not isinstance(min_instances, int) or min_instances < 1:
            raise ValueError(f"Invalid 'min_instances' {min_instances!r}. Valid values are: positive integers")
        super().__init__(min_instances=min_instances, delta=delta, threshold=threshold, alpha=alpha, mode=mode)
        self.threshold = float(threshold)

    def _new_detector(self) -> Any:
        return drift.PageHinkley(**self.params)

    def _after_warmup(self) -> None:
        """Keep the reference mean, start the sums afresh: the reference's own random walk is not
        evidence of a change."""
        d = self.detector
        d._drift_detected = False
        d._sum_increase = d._sum_decrease = d._min_increase = d._max_decrease = 0.0

    @property
    def score(self) -> float:
        d = self.detector
        if d is None or d._x_mean.n == 0:
            return 0.0
        return float(max(d._sum_increase - d._min_increase, d._max_decrease - d._sum_decrease))

    def _detector_state(self) -> Any:
        d = self.detector
        fields = {key: float(getattr(d, key)) for key in _FIELDS}
        fields["_min_increase"] = fields["_min_increase"] if fields["_min_increase"] != float("inf") else None
        return {"n": float(d._x_mean.n), "mean": float(d._x_mean.get()), "drift": bool(d.drift_detected), **fields}

    def _load_detector(self, state: Any) -> None:
        d = self.detector
        d._x_mean.n = state["n"]
        d._x_mean._mean = state["mean"]
        for key in _FIELDS:
            value = state[key]
            setattr(d, key, float("inf") if value is None else float(value))
        d._drift_detected = bool(state["drift"])
