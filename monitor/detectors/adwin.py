"""ADWIN (river), on values standardised with the reference and warmed up with it.

ADWIN keeps a window of recent values, cut where two sub-windows' means differ more than its
`delta` bound allows; a cut is a detected change. It adapts to the stream, so it is not
calibrated to the false-alarm budget (see `monitor.detectors._river`): `threshold` reports
`delta`, `score` the window width. State: river's own compact serialisation of the window
(bincode bytes, base64 in JSON; plain data, no code), O(log width) buckets.

>>> import numpy as np
>>> rng = np.random.default_rng(9)
>>> detector = Adwin().fit(rng.standard_normal(5000), run_length=100_000, window_size=1000)
>>> detector.update_many(np.r_[rng.standard_normal(3000), rng.standard_normal(2000) + 1.0])[:1]
[3063]
"""

from __future__ import annotations

import base64
from typing import Any

from river import drift

from monitor.detectors._common import check_range
from monitor.detectors._river import RiverWrapper
from monitor.detectors.base import DataKind
from monitor.detectors.registry import register


@register
class Adwin(RiverWrapper):
    """river.drift.ADWIN with river's parameters (delta, clock, ...)."""

    name = "adwin"
    accepts = frozenset({DataKind.numeric})

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ):
        check_range("delta", delta, 0.0, 1.0, low_open=True)
        for key, value in (
            ("clock", clock),
            ("max_buckets", max_buckets),
            ("min_window_length", min_window_length),
            ("grace_period", grace_period),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Invalid {key!r} {value!r}. Valid values are: positive integers")
        super().__init__(
            delta=delta,
            clock=clock,
            max_buckets=max_buckets,
            min_window_length=min_window_length,
            grace_period=grace_period,
        )
        self.threshold = float(delta)

    def _new_detector(self) -> Any:
        return drift.ADWIN(**self.params)

    @property
    def score(self) -> float:
        return float(self.detector.width) if self.detector is not None else 0.0

    def _detector_state(self) -> Any:
        raw = self.detector._helper.__getstate__()
        return {"window": base64.b64encode(raw).decode("ascii"), "drift": bool(self.detector.drift_detected)}

    def _load_detector(self, state: Any) -> None:
        self.detector._helper.__setstate__(base64.b64decode(state["window"]))
        self.detector._drift_detected = bool(state["drift"])
