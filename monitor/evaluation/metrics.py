"""Streaming accumulators for model quality and serving, with bounded memory.

A `MetricsAccumulator` keeps, for each of G groups (overall, one per model version, one per slice
value), the sums every metric is computed from, so a batch of joined outcomes is folded in with a
few `np.bincount` calls and metrics are read at any time:

* classification: per-class true positives, predicted and actual counts (accuracy, precision,
  recall, F1 per class and macro); with a positive-class probability, log loss, Brier score, a
  reliability table (15 equal-width bins of the probability: count, mean probability, observed
  rate) and its expected calibration error, and ROC-AUC;
* regression: MAE, RMSE and bias (mean of prediction - label);
* cost per 1,000 predictions from a `CostConfig` (false positives and false negatives of the
  positive class).

ROC-AUC is computed from two histograms of the positive-class probability (positives and
negatives) with `AUC_BINS` = 512 bins equally spaced in logit over [-8, 8] (probabilities from
0.0003 to 0.9997; beyond, the end bins). Pairs in the same bin count one half, like ties, so the
value equals the exact ROC-AUC of the probabilities rounded to their bin; the difference from the
exact ROC-AUC is at most half the share of positive-negative pairs that share a bin, which is
reported with it (`roc_auc_max_error`, typically below 0.002).

`ServingStats` keeps the request error rate and a KLL latency sketch of one model version.

>>> import numpy as np
>>> batch = OutcomeBatch.classification(
...     predicted=np.array([1, 0, 1, 1]), actual=np.array([1, 0, 0, 1]),
...     probability=np.array([0.9, 0.2, 0.6, 0.7]), positive=1)
>>> acc = MetricsAccumulator("classification", n_groups=1, n_classes=2)
>>> acc.update(np.zeros(4, dtype=np.int64), np.arange(4), batch)
>>> m = acc.summary(0, class_names=["0", "1"], positive=1)
>>> m["accuracy"], m["precision"], m["recall"], m["roc_auc"], round(m["brier"], 4)
(0.75, 0.6667, 1.0, 1.0, 0.125)
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasketches import kll_doubles_sketch

from monitor.evaluation.labels import CLASSIFICATION, REGRESSION

AUC_BINS = 512
"""Bins of the positive-class probability histograms that ROC-AUC is computed from."""
AUC_LOGIT_RANGE = 8.0
RELIABILITY_BINS = 15
"""Equal-width probability bins of the reliability table and the expected calibration error."""
PROBABILITY_EPS = 1e-15
"""Probabilities are clipped to [eps, 1 - eps] in the log loss (as scikit-learn did)."""
KLL_K = 200

_VALID_TASKS = (CLASSIFICATION, REGRESSION)


def auc_bins(probability: np.ndarray, bins: int = AUC_BINS) -> np.ndarray:
    """Bin index of each probability on the logit grid (see the module docstring).

    >>> auc_bins(np.array([0.0, 0.5, 1.0]), bins=512).tolist()
    [0, 256, 511]
    """
    p = np.clip(probability, 1e-12, 1 - 1e-12)
    logit = np.log(p / (1 - p))
    index = np.floor((logit + AUC_LOGIT_RANGE) * (bins / (2 * AUC_LOGIT_RANGE)))
    return np.clip(index, 0, bins - 1).astype(np.int64)


def auc_from_histograms(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, float]:
    """ROC-AUC and its largest possible error from histograms of positives' and negatives'
    scores over the same ordered bins (weights may be fractional, as in CBPE).

    >>> auc_from_histograms(np.array([0, 1, 3.0]), np.array([2, 1, 0.0]))
    (0.9583333333333334, 0.041666666666666664)
    """
    p_total = float(positives.sum())
    n_total = float(negatives.sum())
    if p_total <= 0 or n_total <= 0:
        return math.nan, math.nan
    below = np.cumsum(negatives) - negatives
    same = float(np.dot(positives, negatives))
    auc = (float(np.dot(positives, below)) + 0.5 * same) / (p_total * n_total)
    return auc, 0.5 * same / (p_total * n_total)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _round(value: float, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), digits)


@dataclass
class OutcomeBatch:
    """Per-row quantities of a batch of joined outcomes, computed once and shared by every
    accumulator the batch is folded into. `loss` is the 0/1 error (classification) or the
    absolute error (regression)."""

    task: str
    loss: np.ndarray
    predicted: np.ndarray | None = None
    actual: np.ndarray | None = None
    probability: np.ndarray | None = None
    has_probability: np.ndarray | None = None
    positive_label: np.ndarray | None = None
    log_loss: np.ndarray | None = None
    brier: np.ndarray | None = None
    reliability_bin: np.ndarray | None = None
    auc_bin: np.ndarray | None = None
    residual: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.loss)

    @classmethod
    def classification(
        cls,
        predicted: np.ndarray,
        actual: np.ndarray,
        probability: np.ndarray | None = None,
        positive: int | None = None,
        *,
        auc_bin_count: int = AUC_BINS,
        multiclass_log_loss: np.ndarray | None = None,
        multiclass_brier: np.ndarray | None = None,
    ) -> OutcomeBatch:
        """From class codes; `probability` is the positive-class probability (NaN where absent)
        and `positive` the positive class's code. Multiclass rows may bring their own log loss
        and Brier terms (NaN where absent)."""
        predicted = np.asarray(predicted, dtype=np.int64)
        actual = np.asarray(actual, dtype=np.int64)
        batch = cls(CLASSIFICATION, (predicted != actual).astype(np.float64), predicted, actual)
        n = len(predicted)
        log_loss = np.zeros(n)
        brier = np.zeros(n)
        has = np.zeros(n, dtype=bool)
        if probability is not None and positive is not None:
            probability = np.asarray(probability, dtype=np.float64)
            has = ~np.isnan(probability)
            every = bool(has.all())
            if every or has.any():
                p = probability if every else np.where(has, probability, 0.5)
                y = (actual == positive).astype(np.float64)
                clipped = np.clip(p, PROBABILITY_EPS, 1 - PROBABILITY_EPS)
                # Probability given to what happened: p for a positive, 1 - p for a negative.
                log_loss = -np.log(np.where(y > 0, clipped, 1 - clipped))
                brier = (p - y) ** 2
                if not every:
                    log_loss[~has] = 0.0
                    brier[~has] = 0.0
                batch.probability = p
                batch.positive_label = y
                batch.reliability_bin = np.minimum((p * RELIABILITY_BINS).astype(np.int64), RELIABILITY_BINS - 1)
                batch.auc_bin = auc_bins(p, auc_bin_count)
        if multiclass_log_loss is not None:
            extra = ~np.isnan(multiclass_log_loss) & ~has
            if extra.any():
                log_loss = np.where(extra, multiclass_log_loss, log_loss)
                brier = np.where(extra, multiclass_brier, brier)
                batch.multiclass_only = extra
                has = has | extra
        batch.has_probability = has
        batch.log_loss = log_loss
        batch.brier = brier
        return batch

    @classmethod
    def regression(cls, predicted: np.ndarray, actual: np.ndarray) -> OutcomeBatch:
        residual = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
        return cls(REGRESSION, np.abs(residual), residual=residual)

    multiclass_only: np.ndarray | None = None
    """Rows whose log loss and Brier come from multiclass probabilities (no binary probability)."""


class MetricsAccumulator:
    """Sums for G groups of one task; `update` folds in a batch, `summary` reads metrics.

    Memory per group: classification ~8.5 KiB (the ROC-AUC histograms, 2 x 512 float64) plus
    24 bytes per class; regression 40 bytes."""

    def __init__(
        self,
        task: str,
        n_groups: int = 1,
        n_classes: int = 0,
        *,
        auc_bin_count: int = AUC_BINS,
    ):
        if task not in _VALID_TASKS:
            raise ValueError(f"Invalid 'task'. Valid values are: {_VALID_TASKS}")
        self.task = task
        self.auc_bin_count = auc_bin_count
        self.n_groups = 0
        self.n_classes = 0
        self.count = np.zeros(0)
        self.loss = np.zeros(0)
        if task == CLASSIFICATION:
            self.true_positive = np.zeros((0, 0))
            self.predicted = np.zeros((0, 0))
            self.actual = np.zeros((0, 0))
            self.n_probability = np.zeros(0)
            self.log_loss = np.zeros(0)
            self.brier = np.zeros(0)
            self.reliability = np.zeros((0, 3, RELIABILITY_BINS))
            self.auc = np.zeros((0, 2, auc_bin_count))
        else:
            self.residual = np.zeros(0)
            self.squared = np.zeros(0)
        self.ensure(n_groups, n_classes)

    def _arrays(self) -> list[str]:
        if self.task == CLASSIFICATION:
            return ["count", "loss", "true_positive", "predicted", "actual", "n_probability", "log_loss", "brier",
                    "reliability", "auc"]  # fmt: skip
        return ["count", "loss", "residual", "squared"]

    def ensure(self, n_groups: int, n_classes: int = 0) -> None:
        """Grow to at least `n_groups` groups and `n_classes` classes."""
        groups = max(n_groups, self.n_groups)
        classes = max(n_classes, self.n_classes) if self.task == CLASSIFICATION else 0
        if groups == self.n_groups and classes == self.n_classes:
            return
        for name in self._arrays():
            value = getattr(self, name)
            shape = list(value.shape)
            shape[0] = groups
            if name in ("true_positive", "predicted", "actual"):
                shape[1] = classes
            grown = np.zeros(shape)
            grown[tuple(slice(0, s) for s in value.shape)] = value
            setattr(self, name, grown)
        self.n_groups = groups
        self.n_classes = classes

    def update(self, groups: np.ndarray, rows: np.ndarray, batch: OutcomeBatch) -> None:
        """Add row `rows[i]` of `batch` to group `groups[i]` (a row may be in several groups)."""
        if not len(groups):
            return
        g_count = self.n_groups
        self.count += np.bincount(groups, minlength=g_count)
        loss = batch.loss[rows]
        self.loss += np.bincount(groups, weights=loss, minlength=g_count)
        if self.task == REGRESSION:
            residual = batch.residual[rows]
            self.residual += np.bincount(groups, weights=residual, minlength=g_count)
            self.squared += np.bincount(groups, weights=residual * residual, minlength=g_count)
            return
        k = self.n_classes
        size = g_count * k
        base = groups * k
        self.predicted += np.bincount(base + batch.predicted[rows], minlength=size).reshape(g_count, k)
        actual_index = base + batch.actual[rows]
        self.actual += np.bincount(actual_index, minlength=size).reshape(g_count, k)
        self.true_positive += np.bincount(actual_index, weights=1.0 - loss, minlength=size).reshape(g_count, k)
        has = batch.has_probability
        if not has.any():
            return
        if batch.probability is not None and batch.multiclass_only is None and has.all():
            g, r = groups, rows  # the common case: every row has a binary probability
            self.n_probability += np.bincount(g, minlength=g_count)
        else:
            self.n_probability += np.bincount(groups, weights=has[rows], minlength=g_count)
            binary = has if batch.multiclass_only is None else has & ~batch.multiclass_only
            keep = binary[rows]
            g, r = groups[keep], rows[keep]
        self.log_loss += np.bincount(groups, weights=batch.log_loss[rows], minlength=g_count)
        self.brier += np.bincount(groups, weights=batch.brier[rows], minlength=g_count)
        if batch.probability is None or not len(g):
            return
        bins = RELIABILITY_BINS
        index = g * bins + batch.reliability_bin[r]
        size = g_count * bins
        reliability = self.reliability
        reliability[:, 0, :] += np.bincount(index, minlength=size).reshape(g_count, bins)
        reliability[:, 1, :] += np.bincount(index, weights=batch.probability[r], minlength=size).reshape(g_count, bins)
        y = batch.positive_label[r]
        reliability[:, 2, :] += np.bincount(index, weights=y, minlength=size).reshape(g_count, bins)
        b = self.auc_bin_count
        index = (g * 2 + y.astype(np.int64)) * b + batch.auc_bin[r]
        self.auc += np.bincount(index, minlength=g_count * 2 * b).reshape(g_count, 2, b)

    def merge(self, other: MetricsAccumulator) -> None:
        """Add another accumulator's sums (same task, groups aligned by index)."""
        self.ensure(other.n_groups, other.n_classes)
        for name in self._arrays():
            mine = getattr(self, name)
            theirs = getattr(other, name)
            index = tuple(slice(0, s) for s in theirs.shape)
            mine[index] += theirs

    # ------------------------------------------------------------------ reading

    def summary(
        self,
        group: int,
        class_names: Sequence[str] = (),
        positive: int | None = None,
        cost: Any = None,
        *,
        per_class: bool = True,
        reliability: bool = True,
    ) -> dict[str, Any]:
        """Metrics of one group, JSON-safe; `None` where undefined (no data, one class only)."""
        if group >= self.n_groups:
            return {"count": 0}
        n = float(self.count[group])
        out: dict[str, Any] = {"count": int(n)}
        if not n:
            return out
        if self.task == REGRESSION:
            out["mae"] = _round(self.loss[group] / n, 6)
            out["rmse"] = _round(math.sqrt(self.squared[group] / n), 6)
            out["bias"] = _round(self.residual[group] / n, 6)
            return out
        out["accuracy"] = _round(1.0 - self.loss[group] / n)
        out["error_rate"] = _round(self.loss[group] / n)
        tp = self.true_positive[group]
        predicted = self.predicted[group]
        actual = self.actual[group]
        precision = np.divide(tp, predicted, out=np.full_like(tp, np.nan), where=predicted > 0)
        recall = np.divide(tp, actual, out=np.full_like(tp, np.nan), where=actual > 0)
        f1 = np.divide(2 * tp, predicted + actual, out=np.full_like(tp, np.nan), where=(predicted + actual) > 0)
        present = (predicted + actual) > 0
        # As scikit-learn with zero_division=0: an undefined precision or recall counts as 0 in the macro average.
        out["macro_precision"] = _round(float(np.nan_to_num(precision[present]).mean())) if present.any() else None
        out["macro_recall"] = _round(float(np.nan_to_num(recall[present]).mean())) if present.any() else None
        out["macro_f1"] = _round(float(np.nan_to_num(f1[present]).mean())) if present.any() else None
        if positive is not None and positive < len(tp):
            out["precision"] = _round(precision[positive]) if predicted[positive] else 0.0
            out["recall"] = _round(recall[positive])
            out["f1"] = _round(f1[positive])
            false_positive = float(predicted[positive] - tp[positive])
            false_negative = float(actual[positive] - tp[positive])
            out["false_positives"] = int(false_positive)
            out["false_negatives"] = int(false_negative)
            if cost is not None:
                total = false_positive * cost.false_positive + false_negative * cost.false_negative
                out["cost_per_1000"] = _round(1000.0 * total / n)
        if per_class and class_names:
            out["per_class"] = {
                class_names[k]: {
                    "precision": _round(precision[k]) if predicted[k] else 0.0,
                    "recall": _round(recall[k]),
                    "f1": _round(f1[k]),
                    "support": int(actual[k]),
                }
                for k in np.flatnonzero(present)
                if k < len(class_names)
            }
        n_probability = float(self.n_probability[group])
        if n_probability:
            out["log_loss"] = _round(self.log_loss[group] / n_probability, 6)
            out["brier"] = _round(self.brier[group] / n_probability, 6)
        rel = self.reliability[group]
        n_binary = float(rel[0].sum())
        if n_binary:
            out["ece"] = _round(self.expected_calibration_error(group), 6)
            auc, max_error = auc_from_histograms(self.auc[group, 1], self.auc[group, 0])
            out["roc_auc"] = _round(auc)
            out["roc_auc_max_error"] = _round(max_error, 6)
            if reliability:
                out["reliability"] = self.reliability_table(group)
        return out

    def expected_calibration_error(self, group: int) -> float:
        """Sum over bins of the bin's share times |mean probability - observed rate|."""
        count, sum_p, sum_y = self.reliability[group]
        total = count.sum()
        if not total:
            return math.nan
        return float(np.abs(sum_p - sum_y).sum() / total)

    def reliability_table(self, group: int) -> list[list[float | None]]:
        """Rows `[bin low, bin high, count, mean probability, observed positive rate]`."""
        count, sum_p, sum_y = self.reliability[group]
        rows = []
        for b in range(RELIABILITY_BINS):
            c = float(count[b])
            rows.append([
                round(b / RELIABILITY_BINS, 4),
                round((b + 1) / RELIABILITY_BINS, 4),
                int(c),
                _round(sum_p[b] / c) if c else None,
                _round(sum_y[b] / c) if c else None,
            ])  # fmt: skip
        return rows

    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self._arrays())

    # ------------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        """JSON-safe: arrays as nested lists; the sparse AUC histograms as (index, value) pairs."""
        state: dict[str, Any] = {"task": self.task, "groups": self.n_groups, "classes": self.n_classes,
                                 "auc_bin_count": self.auc_bin_count}  # fmt: skip
        for name in self._arrays():
            value = getattr(self, name)
            if name == "auc":
                flat = value.ravel()
                nonzero = np.flatnonzero(flat)
                state[name] = [nonzero.tolist(), flat[nonzero].tolist()]
            else:
                state[name] = value.tolist()
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MetricsAccumulator:
        acc = cls(state["task"], state["groups"], state["classes"], auc_bin_count=state["auc_bin_count"])
        for name in acc._arrays():
            shape = getattr(acc, name).shape
            if name == "auc":
                flat = np.zeros(int(np.prod(shape)))
                index, values = state[name]
                flat[np.asarray(index, dtype=np.int64)] = values
                acc.auc = flat.reshape(shape)
            else:
                setattr(acc, name, np.asarray(state[name], dtype=np.float64).reshape(shape))
        return acc


class ServingStats:
    """Request error rate and latency quantiles of one model version (one window or all time).

    Latencies are buffered and folded into a KLL sketch (rank error ~1.3%) in batches.

    >>> stats = ServingStats()
    >>> for i in range(100):
    ...     stats.add(float(i), "error" if i % 10 == 0 else "ok")
    >>> stats.summary()["request_error_rate"], stats.latency_quantile(0.5)
    (0.1, 50.0)
    """

    __slots__ = ("requests", "errors", "sketch", "_buffer")

    def __init__(self) -> None:
        self.requests = 0
        """Predictions that reported a `request_status`."""
        self.errors = 0
        """Of those, `error` or `timeout`."""
        self.sketch = kll_doubles_sketch(KLL_K)
        self._buffer: list[float] = []

    def add(self, latency_ms: float | None, status: str | None) -> None:
        if latency_ms is not None:
            self._buffer.append(latency_ms)
            if len(self._buffer) >= 4096:
                self._flush()
        if status is not None:
            self.requests += 1
            if status != "ok":
                self.errors += 1

    def _flush(self) -> None:
        if self._buffer:
            self.sketch.update(np.asarray(self._buffer, dtype=np.float64))
            self._buffer.clear()

    def merge(self, other: ServingStats) -> None:
        other._flush()
        self._flush()
        self.requests += other.requests
        self.errors += other.errors
        if not other.sketch.is_empty():
            self.sketch.merge(other.sketch)

    @property
    def latency_count(self) -> int:
        self._flush()
        return self.sketch.n

    def latency_quantile(self, rank: float) -> float | None:
        self._flush()
        return None if self.sketch.is_empty() else float(self.sketch.get_quantile(rank))

    def summary(self) -> dict[str, Any]:
        self._flush()
        out: dict[str, Any] = {
            "requests": self.requests,
            "request_errors": self.errors,
            "request_error_rate": _round(self.errors / self.requests) if self.requests else None,
            "latency_count": self.sketch.n,
        }
        if not self.sketch.is_empty():
            p50, p90, p99 = self.sketch.get_quantiles([0.5, 0.9, 0.99])
            out.update(latency_ms_p50=_round(p50, 3), latency_ms_p90=_round(p90, 3), latency_ms_p99=_round(p99, 3))
        return out

    def to_state(self) -> dict[str, Any]:
        self._flush()
        return {
            "requests": self.requests,
            "errors": self.errors,
            "sketch": base64.b64encode(self.sketch.serialize()).decode("ascii"),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ServingStats:
        stats = cls()
        stats.requests = state["requests"]
        stats.errors = state["errors"]
        stats.sketch = kll_doubles_sketch.deserialize(base64.b64decode(state["sketch"]))
        return stats
