"""The two shapes of detector, and what every detector shares.

* `SequentialDetector`: looks at every value as it arrives (CUSUM, Page-Hinkley, ADWIN) and says
  at which value a change was detected: fast on large shifts. River's shape: `update(x)` returns
  the detector and `drift_detected` says whether that value raised an alarm; `update_many`
  does the same for a batch, vectorised, and returns the positions that raised alarms.
* `WindowTest`: compares a closed window of values with the reference (KS, PSI, chi-square):
  more power on small, slow changes; decides once per window.

Every detector is constructed with its parameters (a bad one fails there, naming the valid
values), then `fit` on a reference sample, which also calibrates its threshold so that on data
like the reference it raises a false alarm once per `run_length` values on average: the false
alarm budget (see `monitor.detectors.calibration`). `clone()` gives an unfitted copy with the
same parameters: per-feature state is made from a configured prototype, never shared.

Values reach detectors already encoded by the monitor:

* numeric: float64 array of non-null values;
* categorical: int64 array of category codes `0..n_categories-1`, where the last code stands for
  every value not seen in the reference;
* error: float64 array of 0.0 (correct) and 1.0 (wrong);
* multivariate: float64 matrix, one row per event, one column per numeric feature, NaN where a
  value is missing.

State is plain data (`to_state` returns JSON-safe dicts and lists; `from_state` rebuilds), so a
detector survives a restart through a changelog topic without pickle.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self

import numpy as np


class DataKind(StrEnum):
    numeric = "numeric"
    categorical = "categorical"
    error = "error"
    multivariate = "multivariate"


@dataclass(frozen=True)
class TestResult:
    """The outcome of one test, with everything an alert needs to explain it."""

    score: float
    threshold: float
    drifted: bool
    details: dict[str, Any] = field(default_factory=dict)
    """Detector-specific numbers for the evidence, JSON-safe (floats, ints, lists)."""


class Detector(ABC):
    name: ClassVar[str]
    """Registered name, used in configuration."""
    accepts: ClassVar[frozenset[DataKind]]

    def __init__(self, **params: Any):
        self.params = params
        self.threshold: float = float("nan")
        self.reference_size: int = 0

    @abstractmethod
    def fit(self, reference: np.ndarray, *, run_length: float, window_size: int, seed: int = 0, **context: Any) -> Self:
        """Learn the reference and calibrate the threshold to one false alarm per `run_length`
        values. `context` carries `n_categories` for categorical detectors."""

    def clone(self) -> Self:
        """An unfitted detector with the same parameters."""
        return type(self)(**self.params)

    def settings_hash(self) -> str:
        """Identifies the detector's configuration in alert evidence."""
        text = json.dumps({"name": self.name, "params": self.params}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @abstractmethod
    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume, JSON-safe."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any]) -> Self: ...


class SequentialDetector(Detector):
    """Decides at every value. After an alarm it restarts from the reference."""

    drift_detected: bool = False
    alarm_results: list[TestResult] = []
    """One per position returned by the last `update_many`: the statistic at the alarm, before the
    restart, with the threshold applied (what the alert's evidence quotes)."""

    @property
    @abstractmethod
    def score(self) -> float:
        """Current value of the statistic compared with `threshold`."""

    def update(self, x: float) -> Self:
        self.drift_detected = bool(self.update_many(np.asarray([x], dtype=float)))
        return self

    @abstractmethod
    def update_many(self, values: np.ndarray) -> list[int]:
        """Feed values in order; return the positions in `values` that raised an alarm."""


class WindowTest(Detector):
    """Decides once per closed window."""

    @abstractmethod
    def test(self, window: np.ndarray) -> TestResult:
        """Compare one window of values with the reference."""
