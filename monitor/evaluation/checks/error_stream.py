"""`performance_degradation`: a change detector over the stream of joined errors.

The joined 0/1 errors, in arrival order, feed `bernoulli_cusum` (absolute errors feed `cusum`
for regression), fitted on a labelled reference (`fit`); `detectors.params.bernoulli_cusum.odds_ratio`
set to a list (e.g. [1.5, 2.5, 4.5]) makes it a bank of CUSUMs that needs no size of the rise in
advance, and its alarms then name the rise that fits best. Each alarm is a finding at the outcome
that crossed the threshold, with the error of the reference, of the last window of outcomes and
since the detector last restarted as evidence. At a window close the check reports its peak
statistic and, when it did not alarm, a clean finding so the alert resolves.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np

from monitor.contracts.alert import AlertKind, Evidence
from monitor.contracts.config import ModelConfig
from monitor.core.finding import Finding
from monitor.detectors import registry
from monitor.detectors.base import SequentialDetector, TestResult
from monitor.evaluation.evidence import ScoreHistory, active, clean, finite, to_time
from monitor.evaluation.labels import CLASSIFICATION, REGRESSION

_NAN = math.nan


def _best_fit(result: TestResult) -> str:
    """A bank of CUSUMs (`bernoulli_cusum` with several odds ratios) names the rise that fits best."""
    rate = result.details.get("best_fit_error_rate")
    return "" if rate is None else f", a rise to about {rate:.3g} fitting best"


class ErrorStream:
    """The error-stream detector of one model, its reference and its recent errors.

    `run_length` is the calibrated mean run length between false alarms (in outcomes);
    `recent_size` the outcomes the evidence's recent error is measured over."""

    def __init__(
        self,
        model_id: str,
        model: ModelConfig,
        *,
        run_length: float,
        window_size: int,
        recent_size: int,
        history: ScoreHistory,
        counters: dict[str, int],
    ):
        self.model_id = model_id
        self.model = model
        self.run_length = run_length
        self.window_size = window_size
        self.recent_size = recent_size
        self.history = history
        self.counters = counters
        self.detector: SequentialDetector | None = None
        self.detector_error: str | None = None
        self.reference_loss = _NAN
        self.reference_size = 0
        self.reference_version: str | None = None
        self.recent = np.zeros(recent_size)
        self.recent_count = 0
        self.run = [0.0, 0.0, _NAN]
        """Outcomes, loss and first outcome time since the detector last restarted."""
        self.alarmed_since_close = False
        self.peak = 0.0
        """Highest statistic at an alarm since the last window closed."""

    @property
    def fitted_or_failed(self) -> bool:
        """A detector was fitted, or fitting failed: the warm-up is over either way."""
        return self.detector is not None or self.detector_error is not None

    def fit(self, loss: np.ndarray, task: str | None) -> None:
        """Fit the detector on reference losses (errors, or absolute errors for regression)."""
        self.reference_size = len(loss)
        self.reference_loss = float(loss.mean()) if len(loss) else _NAN
        self.reference_version = hashlib.sha256(np.ascontiguousarray(loss).tobytes()).hexdigest()[:12]
        name = "bernoulli_cusum" if task == CLASSIFICATION else "cusum"
        params = (self.model.detectors.params if self.model.detectors else {}).get(name, {})
        try:
            detector = registry.create(name, **params)
            detector.fit(loss, run_length=self.run_length, window_size=self.window_size, seed=0)
        except ValueError as exc:  # unknown detector, or a reference it cannot use
            self.detector_error = str(exc)
            self.detector = None
            return
        assert isinstance(detector, SequentialDetector)
        self.detector = detector
        self.detector_error = None
        self.run = [0.0, 0.0, _NAN]

    def update(
        self,
        loss: np.ndarray,
        start: int,
        times: np.ndarray,
        offsets: np.ndarray,
        task: str | None,
        metric_history: Callable[[], dict[str, Any]],
    ) -> list[Finding]:
        """Feed the losses from `start` on (those before went to the warm-up) to the detector;
        remember all of them as recent. Returns a finding per alarm."""
        findings: list[Finding] = []
        detector = self.detector
        if detector is not None and start < len(loss):
            values = loss[start:]
            alarms = detector.update_many(values)
            if alarms:
                findings = self._alarm_findings(
                    values, alarms, detector.alarm_results, times[start:], offsets[start:], task, metric_history
                )
            else:
                run = self.run
                if run[0] == 0:
                    run[2] = float(times[start])
                run[0] += len(values)
                run[1] += float(values.sum())
        self._remember_recent(loss)
        return findings

    def _remember_recent(self, loss: np.ndarray) -> None:
        size = self.recent_size
        if len(loss) >= size:
            self.recent[:] = loss[-size:]
        else:
            self.recent = np.roll(self.recent, -len(loss))
            self.recent[-len(loss) :] = loss
        self.recent_count = min(size, self.recent_count + len(loss))

    def _alarm_findings(
        self,
        values: np.ndarray,
        alarms: list[int],
        results: list[TestResult],
        times: np.ndarray,
        offsets: np.ndarray,
        task: str | None,
        metric_history: Callable[[], dict[str, Any]],
    ) -> list[Finding]:
        """One finding per alarm, with the statistic where it crossed the threshold (`results`)."""
        detector = self.detector
        assert detector is not None
        history = np.concatenate([self.recent[self.recent_size - self.recent_count :], values])
        offset_in_history = self.recent_count
        findings = []
        previous = 0
        run = self.run
        for alarm, result in zip(alarms, results, strict=True):
            if run[0] == 0:
                run[2] = float(times[previous])
            run_n = run[0] + alarm - previous + 1
            run_loss = run[1] + float(values[previous : alarm + 1].sum())
            end = offset_in_history + alarm + 1
            recent = history[max(0, end - self.recent_size) : end]
            recent_loss = float(recent.mean())
            if recent_loss <= self.reference_loss and task == REGRESSION:
                # A two-sided CUSUM also alarms on an improvement; that is not a degradation.
                run[:] = [0.0, 0.0, _NAN]
                previous = alarm + 1
                continue
            score = result.score
            self.peak = max(self.peak, float(score))
            self.counters["error_alarms"] += 1
            self.alarmed_since_close = True
            metric = "error_rate" if task == CLASSIFICATION else "mae"
            details: dict[str, Any] = {
                f"{metric}_reference": round(self.reference_loss, 6),
                f"{metric}_recent": round(recent_loss, 6),
                "recent_outcomes": len(recent),
                f"{metric}_since_restart": round(run_loss / run_n, 6),
                "outcomes_since_restart": int(run_n),
                **result.details,
            }
            at = float(times[alarm])
            details.update(self.history.recent("error_stream", (at, float(score))))
            details.update(metric_history())
            findings.append(
                active(
                    self.model_id,
                    kind=AlertKind.performance_degradation,
                    at=to_time(at),
                    evidence=Evidence(
                        detector=detector.name,
                        score=score,
                        threshold=float(detector.threshold),
                        window_start=to_time(run[2]) if math.isfinite(run[2]) else None,
                        window_end=to_time(at),
                        reference_size=self.reference_size,
                        current_size=int(run_n),
                        reference_version=self.reference_version,
                        settings_hash=detector.settings_hash(),
                        details=details,
                    ),
                    summary=f"{self.model_id}: {metric.replace('_', ' ')} rose from {self.reference_loss:.4g} "
                    f"(reference) to {recent_loss:.4g} over the last {len(recent)} outcomes{_best_fit(result)} "
                    f"({detector.name} {score:.3g} >= {detector.threshold:.3g})",
                    offset=int(offsets[alarm]) if offsets[alarm] >= 0 else None,
                )
            )
            run[:] = [0.0, 0.0, _NAN]
            previous = alarm + 1
        tail = values[previous:]
        if len(tail):
            if run[0] == 0:
                run[2] = float(times[previous])
            run[0] += len(tail)
            run[1] += float(tail.sum())
        return findings

    def check(self, at: datetime, offset: int | None) -> list[Finding]:
        """At a window close: remember the peak statistic; clean unless it alarmed since the last close."""
        if self.detector is None:
            return []
        self.history.remember("error_stream", at.timestamp(), max(self.peak, self.detector.score))
        self.peak = 0.0
        alarmed = self.alarmed_since_close
        self.alarmed_since_close = False
        if alarmed:
            return []
        return [clean(self.model_id, AlertKind.performance_degradation, at, offset)]

    # ------------------------------------------------------------------ state

    def restore(self, state: dict[str, Any]) -> None:
        detector_state = state["detector"]
        self.detector = None
        if detector_state:
            self.detector = registry.DETECTORS[detector_state["name"]].from_state(detector_state)  # type: ignore[assignment]
        self.detector_error = state["detector_error"]
        loss, self.reference_size, self.reference_version = state["reference"]
        self.reference_loss = _NAN if loss is None else loss
        recent, self.recent_count = state["recent"]
        self.recent = np.asarray(recent, dtype=np.float64)
        run = state["run"]
        self.run = [run[0], run[1], _NAN if run[2] is None else run[2]]
        self.alarmed_since_close = state["alarmed_since_close"]
        self.peak = state.get("error_peak", 0.0)

    def reference_state(self) -> list[Any]:
        return [finite(self.reference_loss), self.reference_size, self.reference_version]
