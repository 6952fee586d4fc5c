"""Continuous evaluation: outcomes joined to predictions as they arrive, metrics, label-free estimates.

* `join.JoinStore`: pending predictions by `prediction_id` until their outcome or a TTL (event time).
* `evaluator.ModelEvaluator`: one model's metrics per version, slice and window; error-stream
  change detection; CBPE; canary, slice, serving and label-coverage checks, as `Finding`s.
* `metrics`, `cbpe`, `canary`, `slices`, `significance`: the pieces, usable on their own.
"""

from monitor.evaluation.evaluator import ModelEvaluator
from monitor.evaluation.join import JoinedOutcome, JoinStore

__all__ = ["JoinStore", "JoinedOutcome", "ModelEvaluator"]
