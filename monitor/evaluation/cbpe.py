"""Confidence-based performance estimation (CBPE): a binary classifier's accuracy before labels.

Labels arrive hours or days late; the model's own probabilities arrive with each prediction. If
the probabilities are calibrated, a prediction of the positive class with calibrated probability
c is right with probability c (and a negative one with 1 - c), so a window's expected accuracy is
the mean of those, and expected confusion counts give F1 and ROC-AUC. That is NannyML's CBPE
(batch there, streaming here).

* Calibration: isotonic regression of the label on the raw positive-class probability, fitted by
  pool-adjacent-violators on labelled reference data (a reference file or the model's first
  joined outcomes) and applied by linear interpolation between the fitted points, clipped at the
  ends (as scikit-learn's `IsotonicRegression(out_of_bounds="clip")`, which NannyML uses).
* Estimates per window: accuracy = mean(c if predicted positive else 1 - c); F1 from the expected
  counts E[TP] = sum c over predicted positives, E[FP] = sum (1 - c) over them, E[FN] = sum c over
  predicted negatives; ROC-AUC from histograms of the raw probability weighted by c (positives)
  and 1 - c (negatives), on the grid `metrics.AUC_BINS`.
* Alarm (`estimated_performance_drop`): the window's estimated accuracy is below the reference's
  estimated accuracy by more than max(`margin`, z_alpha * sd * sqrt(1/n + 1/n_ref)), where sd is
  the spread of the per-prediction expected accuracy on the reference: the margin a window of n
  reference-like predictions would exceed with probability alpha (the false-alarm budget).

What it cannot see: CBPE assumes the relation between probability and outcome is the reference's
one (no concept shift). When calibration itself shifts, the estimate is wrong in the direction of
the shift: over-confident probabilities inflate it, under-confident ones deflate it (a spurious
drop at unchanged accuracy). The evaluator records estimate against realised accuracy once labels
arrive, so that bias is visible (`estimator_bias` in the evidence).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> p = rng.random(5000)
>>> y = rng.random(5000) < p                      # calibrated probabilities
>>> cbpe = CBPE(margin=0.02, alpha=1e-3).fit(p, y)
>>> round(cbpe.reference_accuracy, 3), round(cbpe.reference_estimate, 3)
(0.751, 0.754)
>>> window = cbpe.new_window()
>>> q = np.clip(rng.normal(0.5, 0.1, 2000), 0, 1)  # less confident predictions: lower accuracy expected
>>> cbpe.accumulate(window, q)
>>> estimate = cbpe.evaluate(window)
>>> round(estimate.accuracy, 3), estimate.dropped
(0.579, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.evaluation.metrics import AUC_BINS, auc_bins, auc_from_histograms
from monitor.evaluation.significance import z_quantile


class IsotonicCalibrator:
    """P(label = 1 | probability), non-decreasing, fitted by pool-adjacent-violators.

    >>> cal = IsotonicCalibrator().fit(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]))
    >>> cal.predict(np.array([0.0, 0.25, 0.4, 0.9])).tolist()
    [0.0, 0.5, 1.0, 1.0]
    """

    def __init__(self) -> None:
        self.x = np.zeros(0)
        self.y = np.zeros(0)

    def fit(self, probability: np.ndarray, label: np.ndarray) -> IsotonicCalibrator:
        p = np.asarray(probability, dtype=np.float64)
        t = np.asarray(label, dtype=np.float64)
        if len(p) == 0:
            raise ValueError("IsotonicCalibrator: no data to fit")
        order = np.argsort(p, kind="stable")
        p, t = p[order], t[order]
        # Equal probabilities form one point (their mean label, their count as weight).
        unique, start = np.unique(p, return_index=True)
        weights = np.diff(np.append(start, len(p))).astype(np.float64)
        means = np.add.reduceat(t, start) / weights
        # Pool adjacent violators on the stack of blocks.
        block_value: list[float] = []
        block_weight: list[float] = []
        block_end: list[int] = []
        for i in range(len(unique)):
            value, weight = float(means[i]), float(weights[i])
            while block_value and block_value[-1] >= value:
                w = block_weight.pop() + weight
                value = (block_value.pop() * (w - weight) + value * weight) / w
                weight = w
                block_end.pop()
            block_value.append(value)
            block_weight.append(weight)
            block_end.append(i)
        fitted = np.empty(len(unique))
        begin = 0
        for value, end in zip(block_value, block_end, strict=True):
            fitted[begin : end + 1] = value
            begin = end + 1
        # Keep the first and last point of each block: interpolation between them is the same.
        keep = np.ones(len(unique), dtype=bool)
        if len(unique) > 2:
            keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
        self.x = unique[keep]
        self.y = fitted[keep]
        return self

    def predict(self, probability: np.ndarray) -> np.ndarray:
        if len(self.x) == 0:
            raise RuntimeError("IsotonicCalibrator: call fit first")
        return np.interp(probability, self.x, self.y)

    def to_state(self) -> dict[str, Any]:
        return {"x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> IsotonicCalibrator:
        cal = cls()
        cal.x = np.asarray(state["x"], dtype=np.float64)
        cal.y = np.asarray(state["y"], dtype=np.float64)
        return cal


@dataclass
class CBPEWindow:
    """Running sums of one window's expected confusion counts."""

    n: float = 0.0
    expected_correct: float = 0.0
    expected_correct_sq: float = 0.0
    expected_tp: float = 0.0
    expected_fp: float = 0.0
    expected_fn: float = 0.0
    auc: np.ndarray = field(default_factory=lambda: np.zeros((2, AUC_BINS)))
    """Row 0: negatives' weights (1 - c) by probability bin; row 1: positives' (c)."""

    def to_state(self) -> dict[str, Any]:
        nonzero = np.flatnonzero(self.auc.ravel())
        return {
            "n": self.n,
            "expected_correct": self.expected_correct,
            "expected_correct_sq": self.expected_correct_sq,
            "expected_tp": self.expected_tp,
            "expected_fp": self.expected_fp,
            "expected_fn": self.expected_fn,
            "auc": [nonzero.tolist(), self.auc.ravel()[nonzero].tolist()],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CBPEWindow:
        window = cls(**{k: v for k, v in state.items() if k != "auc"})
        flat = np.zeros(2 * AUC_BINS)
        index, values = state["auc"]
        flat[np.asarray(index, dtype=np.int64)] = values
        window.auc = flat.reshape(2, AUC_BINS)
        return window


@dataclass(frozen=True)
class CBPEEstimate:
    """One window's estimate, the threshold it was held to, and whether it dropped."""

    n: int
    accuracy: float
    f1: float
    roc_auc: float
    reference_accuracy: float
    threshold: float
    margin_applied: float
    dropped: bool


class CBPE:
    """Calibrate on labelled reference data, then estimate accuracy, F1 and ROC-AUC per window.

    Parameters
    ----------
    margin
        Smallest drop of estimated accuracy (absolute) worth an alert.
    alpha
        Chance that a window of reference-like data is below the threshold (false-alarm budget).
    min_samples
        Windows with fewer predictions are estimated but never alarm.
    """

    def __init__(self, *, margin: float = 0.02, alpha: float = 1e-3, min_samples: int = 100):
        if not 0 <= margin < 1:
            raise ValueError(f"Invalid 'margin' {margin!r}. Valid values are: numbers in [0, 1)")
        if not 0 < alpha < 1:
            raise ValueError(f"Invalid 'alpha' {alpha!r}. Valid values are: numbers in (0, 1)")
        if min_samples < 1:
            raise ValueError(f"Invalid 'min_samples' {min_samples!r}. Valid values are: integers >= 1")
        self.margin = float(margin)
        self.alpha = float(alpha)
        self.min_samples = int(min_samples)
        self.calibrator: IsotonicCalibrator | None = None
        self.reference_size = 0
        self.reference_accuracy = math.nan
        """Realised accuracy on the reference."""
        self.reference_estimate = math.nan
        """Estimated accuracy on the reference: the baseline windows are compared with."""
        self.reference_sd = math.nan
        self.reference_f1 = math.nan
        self.reference_roc_auc = math.nan

    @property
    def fitted(self) -> bool:
        return self.calibrator is not None

    def fit(
        self, probability: np.ndarray, actual_positive: np.ndarray, predicted_positive: np.ndarray | None = None
    ) -> CBPE:
        """Calibrate on reference probabilities and labels (`actual_positive`: label is the
        positive class). `predicted_positive` defaults to probability >= 0.5."""
        p = np.asarray(probability, dtype=np.float64)
        y = np.asarray(actual_positive, dtype=bool)
        keep = ~np.isnan(p)
        p, y = p[keep], y[keep]
        yhat = p >= 0.5 if predicted_positive is None else np.asarray(predicted_positive, dtype=bool)[keep]
        if len(p) < 10:
            raise ValueError(f"CBPE: the reference needs at least 10 labelled probabilities, got {len(p)}")
        self.calibrator = IsotonicCalibrator().fit(p, y)
        c = self.calibrator.predict(p)
        expected = np.where(yhat, c, 1.0 - c)
        self.reference_size = len(p)
        self.reference_accuracy = float((yhat == y).mean())
        self.reference_estimate = float(expected.mean())
        self.reference_sd = float(expected.std())
        tp = float((yhat & y).sum())
        fp = float((yhat & ~y).sum())
        fn = float((~yhat & y).sum())
        self.reference_f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
        bins = auc_bins(p)
        self.reference_roc_auc = auc_from_histograms(
            np.bincount(bins, weights=y, minlength=AUC_BINS), np.bincount(bins, weights=~y, minlength=AUC_BINS)
        )[0]
        return self

    def new_window(self) -> CBPEWindow:
        return CBPEWindow()

    def accumulate(
        self, window: CBPEWindow, probability: np.ndarray, predicted_positive: np.ndarray | None = None
    ) -> None:
        """Fold a batch of predictions (positive-class probabilities) into a window."""
        if self.calibrator is None:
            raise RuntimeError("CBPE: call fit first")
        p = np.asarray(probability, dtype=np.float64)
        keep = ~np.isnan(p)
        if not keep.all():
            p = p[keep]
            if predicted_positive is not None:
                predicted_positive = np.asarray(predicted_positive)[keep]
        if not len(p):
            return
        yhat = p >= 0.5 if predicted_positive is None else np.asarray(predicted_positive, dtype=bool)
        c = self.calibrator.predict(p)
        expected = np.where(yhat, c, 1.0 - c)
        window.n += len(p)
        window.expected_correct += float(expected.sum())
        window.expected_correct_sq += float((expected * expected).sum())
        window.expected_tp += float(c[yhat].sum())
        window.expected_fp += float((1.0 - c[yhat]).sum())
        window.expected_fn += float(c[~yhat].sum())
        bins = auc_bins(p)
        window.auc[1] += np.bincount(bins, weights=c, minlength=AUC_BINS)
        window.auc[0] += np.bincount(bins, weights=1.0 - c, minlength=AUC_BINS)

    def evaluate(self, window: CBPEWindow) -> CBPEEstimate:
        """The window's estimates and whether its accuracy dropped below the threshold."""
        n = window.n
        accuracy = window.expected_correct / n if n else math.nan
        denominator = 2 * window.expected_tp + window.expected_fp + window.expected_fn
        f1 = 2 * window.expected_tp / denominator if denominator else math.nan
        roc_auc = auc_from_histograms(window.auc[1], window.auc[0])[0] if n else math.nan
        if n:
            statistical = z_quantile(self.alpha) * self.reference_sd * math.sqrt(1.0 / n + 1.0 / self.reference_size)
        else:
            statistical = math.inf
        margin = max(self.margin, statistical)
        threshold = self.reference_estimate - margin
        dropped = bool(n >= self.min_samples and accuracy < threshold)
        return CBPEEstimate(int(n), accuracy, f1, roc_auc, self.reference_estimate, threshold, margin, dropped)

    def settings(self) -> dict[str, Any]:
        return {"name": "cbpe", "margin": self.margin, "alpha": self.alpha, "min_samples": self.min_samples}

    def to_state(self) -> dict[str, Any]:
        return {
            **self.settings(),
            "calibrator": self.calibrator.to_state() if self.calibrator else None,
            "reference_size": self.reference_size,
            **{
                name: (value if math.isfinite(value) else None)
                for name in (
                    "reference_accuracy",
                    "reference_estimate",
                    "reference_sd",
                    "reference_f1",
                    "reference_roc_auc",
                )  # fmt: skip
                for value in [getattr(self, name)]
            },
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CBPE:
        cbpe = cls(margin=state["margin"], alpha=state["alpha"], min_samples=state["min_samples"])
        if state["calibrator"] is not None:
            cbpe.calibrator = IsotonicCalibrator.from_state(state["calibrator"])
        for name in ("reference_accuracy", "reference_estimate", "reference_sd", "reference_f1", "reference_roc_auc"):
            value = state[name]
            setattr(cbpe, name, math.nan if value is None else float(value))
        cbpe.reference_size = state["reference_size"]
        return cbpe
