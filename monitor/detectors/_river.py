"""What the river wrappers share: values standardised with the reference, the reference fed
first as warm-up, and a per-value loop (river detectors take one value at a time).

river's detectors adapt their own baseline as they go (ADWIN's window, Page-Hinkley's running
mean), so a fixed-reference bootstrap cannot calibrate them to a run length within the fitting
time budget: their thresholds are river's parameters, in reference standard deviations, and
`threshold` reports them. For a calibrated false-alarm budget use `cusum`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Self

import numpy as np

from monitor.detectors._common import check_run_length, finite
from monitor.detectors.base import SequentialDetector, TestResult


class RiverWrapper(SequentialDetector):
    """A river drift detector on standardised values, warmed up with the reference."""

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.mean = 0.0
        self.sd = 1.0
        self.detector: Any = None
        self.n_seen = 0
        self.drift_detected = False

    @abstractmethod
    def _new_detector(self) -> Any: ...

    @abstractmethod
    def _detector_state(self) -> Any: ...

    @abstractmethod
    def _load_detector(self, state: Any) -> None: ...

    def fit(
        self, reference: np.ndarray, *, run_length: float, window_size: int = 1000, seed: int = 0, **context: Any
    ) -> Self:
        check_run_length(run_length)
        ref = finite(reference)
        if len(ref) < 50:
            raise ValueError(f"{self.name}: the reference needs at least 50 values, got {len(ref)}")
        self.reference_size = len(ref)
        self.mean, self.sd = float(ref.mean()), float(ref.std()) or 1.0
        self.detector = self._new_detector()
        for x in ((ref - self.mean) / self.sd).tolist():
            self.detector.update(x)
        self._after_warmup()
        return self

    def _after_warmup(self) -> None:
        """Forget alarms raised inside the reference."""

    def update_many(self, values: np.ndarray) -> list[int]:
        if self.detector is None:
            raise RuntimeError(f"{self.name}: call fit(reference, ...) before update")
        raw = np.asarray(values, dtype=float).ravel()
        alarms = []
        self.alarm_results = []
        det = self.detector
        for i, x in enumerate(((raw - self.mean) / self.sd).tolist()):
            if x != x:  # NaN: skipped, keeps its position
                continue
            det.update(x)
            if det.drift_detected:
                alarms.append(i)
                self.alarm_results.append(TestResult(self.score, self.threshold, True))
        self.n_seen += int(np.isfinite(raw).sum())
        self.drift_detected = bool(alarms)
        return alarms

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "reference_size": self.reference_size,
            "mean": self.mean,
            "sd": self.sd,
            "n_seen": self.n_seen,
            "detector": self._detector_state() if self.detector is not None else None,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        if state.get("name") != cls.name:
            raise ValueError(f"state of {state.get('name')!r}, not {cls.name!r}")
        det = cls(**state["params"])
        det.reference_size = int(state["reference_size"])
        det.mean, det.sd, det.n_seen = float(state["mean"]), float(state["sd"]), int(state["n_seen"])
        if state["detector"] is not None:
            det.detector = det._new_detector()
            det._load_detector(state["detector"])
            det._after_load()
        return det

    def _after_load(self) -> None:
        pass
