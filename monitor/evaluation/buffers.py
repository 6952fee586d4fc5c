"""Buffers of a model's predictions and joined outcomes, waiting to be processed as one batch.

Outcomes arrive one joined record at a time; the metrics and the error-stream detector are
cheap per batch and dear per event (design principle 10). The buffers hold the already-interned
codes of each event until `batch_size` of them are there, a window closes or someone asks, and
hand them out as arrays. Reading them (`outcomes`, `predictions`) does not empty them: only
`clear_*` does, so a read-only report can look at buffered events without consuming them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from monitor.evaluation.evidence import finite
from monitor.evaluation.labels import CLASSIFICATION, class_name
from monitor.evaluation.metrics import OutcomeBatch

_NAN = math.nan


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Buffered outcomes as arrays, with their batch for the metrics."""

    batch: OutcomeBatch
    prediction_time: np.ndarray
    outcome_time: np.ndarray
    versions: np.ndarray
    slices: np.ndarray
    offsets: np.ndarray
    """Input offset of each outcome (-1: none)."""

    def __len__(self) -> int:
        return len(self.versions)


@dataclass(frozen=True, slots=True)
class Predictions:
    times: np.ndarray
    probability: np.ndarray
    """Positive-class probability (NaN: none)."""
    positive: np.ndarray
    """Predicted the positive class."""
    serving: list[tuple[int, float | None, str | None]]
    """(version code, latency, request status) of the predictions that reported either."""


class OutcomeBuffer:
    """Joined outcomes as rows: prediction time, outcome time, version, slices, predicted, actual
    (class codes or values), positive-class probability, offset (-1: none)."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, int, int, float, float, float, int]] = []
        self.multi: list[tuple[int, dict[str, float], str]] = []
        """(row, class probabilities, label name) of multiclass rows."""

    def __len__(self) -> int:
        return len(self.rows)

    def outcomes(self, task: str | None, positive_code: int) -> Outcomes | None:
        """The buffered outcomes as arrays (None when empty); the buffer keeps them."""
        n = len(self.rows)
        if not n:
            return None
        table = np.fromiter(chain.from_iterable(self.rows), dtype=np.float64, count=8 * n).reshape(n, 8)
        if task == CLASSIFICATION:
            multi_log_loss = multi_brier = None
            if self.multi:
                multi_log_loss = np.full(n, _NAN)
                multi_brier = np.full(n, _NAN)
                for row, probabilities, label_name in self.multi:
                    p_true = 0.0
                    brier = 0.0
                    for name, p in probabilities.items():
                        hit = class_name(name) == label_name
                        if hit:
                            p_true = p
                        brier += (p - (1.0 if hit else 0.0)) ** 2
                    multi_log_loss[row] = -math.log(min(max(p_true, 1e-15), 1 - 1e-15))
                    multi_brier[row] = brier
            batch = OutcomeBatch.classification(
                table[:, 4].astype(np.int64), table[:, 5].astype(np.int64), table[:, 6].copy(), positive_code,
                multiclass_log_loss=multi_log_loss, multiclass_brier=multi_brier,
            )  # fmt: skip
        else:
            batch = OutcomeBatch.regression(table[:, 4], table[:, 5])
        return Outcomes(
            batch, table[:, 0], table[:, 1], table[:, 2].astype(np.int64), table[:, 3].astype(np.int64),
            table[:, 7].astype(np.int64),
        )  # fmt: skip

    def clear(self) -> None:
        self.rows.clear()
        self.multi.clear()

    def state(self) -> dict[str, Any]:
        return {
            "outcome_buffer": [[*row[:6], finite(row[6]), row[7]] for row in self.rows],
            "outcome_multi": [[row, probs, label] for row, probs, label in self.multi],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.rows = [(*row[:6], _NAN if row[6] is None else row[6], row[7]) for row in state["outcome_buffer"]]
        self.multi = [(row, probs, label) for row, probs, label in state["outcome_multi"]]


class PredictionBuffer:
    """Predictions' times, positive-class probabilities and predicted-positive flags, and the
    serving signals of those that reported any."""

    def __init__(self) -> None:
        self.time: list[float] = []
        self.prob: list[float] = []
        self.positive: list[bool] = []
        self.serving: list[tuple[int, float | None, str | None]] = []

    def __len__(self) -> int:
        return len(self.time)

    def predictions(self) -> Predictions | None:
        """The buffered predictions as arrays (None when empty); the buffer keeps them."""
        if not self.time:
            return None
        return Predictions(
            np.asarray(self.time), np.asarray(self.prob), np.asarray(self.positive, dtype=bool), list(self.serving)
        )

    def clear(self) -> None:
        self.time.clear()
        self.prob.clear()
        self.positive.clear()
        self.serving.clear()

    def state(self) -> list[Any]:
        return [
            self.time,
            [None if math.isnan(p) else p for p in self.prob],
            self.positive,
            [list(s) for s in self.serving],
        ]

    def restore(self, state: list[Any]) -> None:
        self.time = list(state[0])
        self.prob = [_NAN if p is None else p for p in state[1]]
        self.positive = list(state[2])
        self.serving = [(v, latency, status) for v, latency, status in state[3]]
