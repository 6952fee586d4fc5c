"""`estimated_performance_drop`: CBPE's label-free accuracy estimate of each closed window.

Binary classifiers with probabilities only. CBPE (`monitor.evaluation.cbpe`) is calibrated on
the same labelled reference as the error stream; each window's predictions are folded into the
window's CBPE sums as they are processed, and the window is estimated once, when it closes, so
the alert comes before the labels do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np

from monitor.contracts.alert import AlertKind, Evidence
from monitor.core.finding import Finding
from monitor.evaluation.cbpe import CBPE
from monitor.evaluation.evidence import ScoreHistory, active, clean, finite, settings_hash, to_time
from monitor.evaluation.ledger import Window


class CBPECheck:
    """The model's fitted CBPE (None until a reference with both classes is seen)."""

    def __init__(self, model_id: str, *, margin: float, alpha: float, min_events: int, history: ScoreHistory):
        self.model_id = model_id
        self.margin = margin
        self.alpha = alpha
        self.min_events = min_events
        self.history = history
        self.cbpe: CBPE | None = None

    @property
    def fitted(self) -> CBPE | None:
        return self.cbpe if self.cbpe is not None and self.cbpe.fitted else None

    def fit(self, probability: np.ndarray, actual_positive: np.ndarray, predicted_positive: np.ndarray) -> None:
        keep = ~np.isnan(probability)
        if keep.sum() < max(100, self.min_events) or len(np.unique(actual_positive[keep])) < 2:
            return
        cbpe = CBPE(margin=self.margin, alpha=self.alpha, min_samples=self.min_events)
        self.cbpe = cbpe.fit(probability[keep], actual_positive[keep], predicted_positive[keep])

    def check(
        self,
        window: Window,
        at: datetime,
        offset: int | None,
        *,
        reference_version: str | None,
        quality: Callable[[], dict[str, Any]],
        metric_history: Callable[[], dict[str, Any]],
    ) -> list[Finding]:
        """Estimate the closing window; `quality` is the recent estimate-vs-realised report."""
        cbpe = self.cbpe
        if cbpe is None or window.cbpe is None or window.cbpe.n < cbpe.min_samples:
            return []
        estimate = cbpe.evaluate(window.cbpe)
        window.estimate = {
            "accuracy": finite(estimate.accuracy),
            "f1": finite(estimate.f1),
            "roc_auc": finite(estimate.roc_auc),
            "n": estimate.n,
            "threshold": finite(estimate.threshold),
        }
        self.history.remember("cbpe", at.timestamp(), estimate.accuracy)
        if not estimate.dropped:
            return [clean(self.model_id, AlertKind.estimated_performance_drop, at, offset)]
        report = quality()
        details: dict[str, Any] = {
            "estimated_accuracy": round(estimate.accuracy, 6),
            "reference_estimated_accuracy": round(cbpe.reference_estimate, 6),
            "reference_accuracy": round(cbpe.reference_accuracy, 6),
            "margin_applied": round(estimate.margin_applied, 6),
            "estimated_f1": finite(estimate.f1),
            "estimated_roc_auc": finite(estimate.roc_auc),
            "reference_roc_auc": finite(cbpe.reference_roc_auc),
            "estimator_bias": report["estimator_bias"],
            "labelled_windows_compared": report["windows_compared"],
            **self.history.recent("cbpe"),
            **metric_history(),
        }
        return [
            active(
                self.model_id,
                kind=AlertKind.estimated_performance_drop,
                at=at,
                evidence=Evidence(
                    detector="cbpe_accuracy",
                    score=float(estimate.accuracy),
                    threshold=float(estimate.threshold),
                    window_start=to_time(window.start) if math.isfinite(window.start) else None,
                    window_end=at,
                    reference_size=cbpe.reference_size,
                    current_size=estimate.n,
                    reference_version=reference_version,
                    settings_hash=settings_hash(cbpe.settings()),
                    details=details,
                ),
                summary=f"{self.model_id}: estimated accuracy {estimate.accuracy:.3f} (CBPE, before labels) is below "
                f"{estimate.threshold:.3f} (reference {cbpe.reference_estimate:.3f} - margin "
                f"{estimate.margin_applied:.3f})",
                offset=offset,
            )
        ]
