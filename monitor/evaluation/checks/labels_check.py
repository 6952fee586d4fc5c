"""`labels_missing`: label coverage of the windows that have become old enough to be final.

A window's coverage is judged once, when it is `label_coverage_horizon_seconds` old: the
predictions of the windows that matured since the last close, against the labels joined to
them, significantly below `expected_label_coverage` (one-sided binomial test, normal approximation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from monitor.contracts.alert import AlertKind, Evidence
from monitor.core.finding import Finding
from monitor.evaluation.evidence import active, clean, settings_hash, to_time
from monitor.evaluation.ledger import Window
from monitor.evaluation.significance import upper_tail


def check_labels(
    model_id: str,
    windows: Iterable[Window],
    now: float,
    at: datetime,
    offset: int | None,
    *,
    expected: float,
    horizon: float,
    alpha: float,
    min_events: int,
) -> list[Finding]:
    """Judge the closed windows (oldest first) that ended at least `horizon` before `now`."""
    if expected <= 0:
        return []
    matured = []
    for window in windows:
        if window.end > now - horizon:
            break
        if not window.judged:
            window.judged = True
            matured.append(window)
    predictions = sum(w.predictions for w in matured)
    if predictions < min_events:
        return []
    labelled = min(predictions, sum(w.labelled for w in matured))
    coverage = labelled / predictions
    if expected >= 1:
        low = coverage < 1
        p_value = 0.0 if low else 1.0
    else:
        z = (expected - coverage) / math.sqrt(expected * (1 - expected) / predictions)
        p_value = upper_tail(z)
        low = coverage < expected and p_value < alpha
    if not low:
        return [clean(model_id, AlertKind.labels_missing, at, offset)]
    return [
        active(
            model_id,
            kind=AlertKind.labels_missing,
            at=at,
            evidence=Evidence(
                detector="label_coverage_binomial",
                score=coverage,
                threshold=expected,
                window_start=to_time(matured[0].start) if math.isfinite(matured[0].start) else None,
                window_end=to_time(matured[-1].end),
                current_size=predictions,
                settings_hash=settings_hash({"expected": expected, "horizon": horizon, "alpha": alpha}),
                details={
                    "labelled": labelled,
                    "predictions": predictions,
                    "p_value": p_value,
                    "horizon_seconds": horizon,
                },
            ),
            summary=f"{model_id}: {coverage:.1%} of predictions got a label within "
            f"{horizon / 3600:.3g} h, expected {expected:.1%}",
            offset=offset,
        )
    ]
