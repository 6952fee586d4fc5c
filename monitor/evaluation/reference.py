"""The warm-up: the first joined outcomes, kept as the reference when no labelled reference was given.

The error-stream detector and CBPE both need a labelled reference. `ModelEvaluator.fit_reference`
takes one (e.g. the validation set); without it the first `warmup_outcomes` joined outcomes are
collected here (their losses, and for binary classifiers with probabilities the CBPE samples),
and both are fitted on them once there are enough.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from monitor.evaluation.labels import CLASSIFICATION
from monitor.evaluation.metrics import OutcomeBatch


class Warmup:
    """Warm-up losses, and positive-class probability, actual and predicted positive (CBPE)."""

    def __init__(self) -> None:
        self.loss: list[float] = []
        self.prob: list[float] = []
        self.actual: list[bool] = []
        self.predicted: list[bool] = []

    def take(self, batch: OutcomeBatch, size: int, positive_code: int) -> int:
        """Take the batch's first outcomes until the warm-up holds `size`; returns how many it took."""
        take = min(len(batch.loss), size - len(self.loss))
        self.loss.extend(batch.loss[:take].tolist())
        if batch.task == CLASSIFICATION and batch.probability is not None:
            has = batch.has_probability[:take]
            self.prob.extend(batch.probability[:take][has].tolist())
            self.actual.extend((batch.actual[:take][has] == positive_code).tolist())
            self.predicted.extend((batch.predicted[:take][has] == positive_code).tolist())
        return take

    def clear(self) -> None:
        self.loss, self.prob, self.actual, self.predicted = [], [], [], []

    def state(self) -> list[Any]:
        return [self.loss, self.prob, self.actual, self.predicted]

    def restore(self, state: list[Any]) -> None:
        self.loss, self.prob, self.actual, self.predicted = (list(x) for x in state)

    def cbpe_samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.asarray(self.prob), np.asarray(self.actual), np.asarray(self.predicted)
