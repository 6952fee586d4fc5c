"""Reports of one model's evaluation: all-time metrics, metrics per window, CBPE's track record.

Pure functions of the evaluator's accumulators: they read and never write, so reading a report
cannot change what the checks later find (the evaluator hands them a view that includes the
buffered events without consuming them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from monitor.evaluation.evidence import finite
from monitor.evaluation.interning import Interner
from monitor.evaluation.labels import CLASSIFICATION
from monitor.evaluation.ledger import Window
from monitor.evaluation.metrics import MetricsAccumulator


def summary(
    acc: MetricsAccumulator | None, group: int, interner: Interner, task: str | None, cost: Any, **options: Any
) -> dict[str, Any]:
    """Metrics of one group of an accumulator (`{"count": 0}` without one)."""
    if acc is None:
        return {"count": 0}
    positive = interner.positive_code if task == CLASSIFICATION else None
    return acc.summary(group, interner.classes, positive, cost, **options)


def window_report(
    windows: Iterable[Window], interner: Interner, task: str | None, cost: Any, last: int | None
) -> list[dict[str, Any]]:
    """Per closed window with metrics or a CBPE estimate (newest last): counts, label coverage
    so far, metrics overall and per version, CBPE estimate."""
    kept = [w for w in windows if w.metrics is not None or w.estimate is not None]
    if last is not None:
        kept = kept[-last:]
    versions = interner.versions
    return [
        {
            "window": w.index,
            "start": finite(w.start),
            "end": finite(w.end),
            "predictions": w.predictions,
            "labelled": w.labelled,
            "label_coverage": round(min(1.0, w.labelled / w.predictions), 6) if w.predictions else None,
            "overall": summary(w.metrics, 0, interner, task, cost, reliability=False),
            "versions": {
                name: summary(w.metrics, 1 + code, interner, task, cost, reliability=False, per_class=False)
                for code, name in enumerate(versions)
                if w.metrics is not None and 1 + code < w.metrics.n_groups and w.metrics.count[1 + code]
            },
            "cbpe": w.estimate,
        }
        for w in kept
    ]


def cbpe_report(windows: Iterable[Window], last: int | None = None, min_coverage: float = 0.9) -> dict[str, Any]:
    """CBPE estimate against realised accuracy per window, and the estimator's bias (mean of
    estimate - realised) over the last `last` windows at least `min_coverage` labelled."""
    rows = []
    for w in windows:
        if w.estimate is None or w.estimate.get("accuracy") is None:
            continue
        realised = 1.0 - w.loss / w.labelled if w.labelled else None
        coverage = min(1.0, w.labelled / w.predictions) if w.predictions else 0.0
        rows.append({"window": w.index, "end": finite(w.end), "estimated_accuracy": w.estimate["accuracy"],
                     "realised_accuracy": None if realised is None else round(realised, 6),
                     "label_coverage": round(coverage, 6)})  # fmt: skip
    compared = [r for r in rows if r["realised_accuracy"] is not None and r["label_coverage"] >= min_coverage]
    if last is not None:
        compared = compared[-last:]
    errors = [r["estimated_accuracy"] - r["realised_accuracy"] for r in compared]
    return {
        "windows": rows,
        "windows_compared": len(compared),
        "estimator_bias": round(float(np.mean(errors)), 6) if errors else None,
        "mean_absolute_error": round(float(np.mean(np.abs(errors))), 6) if errors else None,
    }
