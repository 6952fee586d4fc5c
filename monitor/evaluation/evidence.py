"""What every evaluation check attaches to a finding: times, settings hashes, score history.

It exists so the six checks word their findings the same way (an alert's evidence is read by a
person at 3 a.m. and compared across kinds) without each check knowing the others: a check
builds a finding with `active`/`clean`, and asks `ScoreHistory` and `metric_history` for the
trend that goes into its evidence.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from monitor.contracts.alert import AlertKind, Evidence
from monitor.core.finding import Finding
from monitor.evaluation.labels import CLASSIFICATION

if TYPE_CHECKING:
    from monitor.evaluation.ledger import Window

MAX_SCORE_HISTORY = 20
"""Closed windows whose score each check remembers, and whose metric per version the evidence of
a performance alert carries (`recent_scores`, `metric_by_version`)."""


def to_time(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def iso(t: float) -> str:
    return to_time(t).isoformat().replace("+00:00", "Z")


def finite(value: float | None) -> float | None:
    """`None` for a value JSON cannot hold (NaN, infinities)."""
    return None if value is None or not math.isfinite(value) else float(value)


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def active(
    model_id: str,
    *,
    kind: AlertKind,
    at: datetime,
    evidence: Evidence,
    summary: str,
    offset: int | None = None,
    slice: str | None = None,
    model_version: str = "all",
) -> Finding:
    """A condition found by one of a model's checks (model-level: no feature)."""
    return Finding(kind, model_id, None, slice, True, at, model_version, evidence, summary, offset)


def clean(model_id: str, kind: AlertKind, at: datetime, offset: int | None, slice: str | None = None) -> Finding:
    """A check that ran and found nothing, so an alert of its kind can resolve."""
    return Finding(kind, model_id, None, slice, False, at, offset=offset)


class ScoreHistory:
    """Check (`error_stream`, `cbpe`, `canary:<version>`, `slice:<slice>`) -> [window end, score]
    of the last closed windows, for the evidence."""

    def __init__(self, series: dict[str, list[list[float]]] | None = None):
        self.series: dict[str, list[list[float]]] = series if series is not None else {}

    def remember(self, check: str, end: float, score: float) -> None:
        """Append (window end, score) to a check's bounded history (a score that is not finite is skipped)."""
        if not math.isfinite(score):
            return
        series = self.series.setdefault(check, [])
        series.append([end, float(f"{score:.6g}")])
        del series[:-MAX_SCORE_HISTORY]

    def recent(self, check: str, extra: tuple[float, float] | None = None) -> dict[str, Any]:
        """Evidence details: a check's scores over the last closed windows and the window ends
        (oldest first), with `extra` (an alarm between window closes) last."""
        points = list(self.series.get(check, []))
        if extra is not None and math.isfinite(extra[1]):
            points = [*points[-(MAX_SCORE_HISTORY - 1) :], [extra[0], float(f"{extra[1]:.6g}")]]
        return {
            "recent_scores": [score for _, score in points],
            "recent_window_ends": [iso(end) for end, _ in points],
        }


def metric_history(task: str | None, windows: Iterable[Window], versions: Sequence[str]) -> dict[str, Any]:
    """Evidence details: the error metric (error rate, or MAE for regression) of the last closed
    windows that have outcomes, overall (`all`) and per version, with the outcome counts."""
    if task is None:
        return {}
    kept = [w for w in windows if w.metrics is not None][-MAX_SCORE_HISTORY:]
    names: list[str] = []
    values: list[list[float | None]] = []
    counts: list[list[int]] = []
    groups = [(0, "all"), *((1 + code, name) for code, name in enumerate(versions))]
    for group, name in groups:
        row_counts = [int(w.metrics.count[group]) if group < w.metrics.n_groups else 0 for w in kept]  # type: ignore[union-attr]
        if not any(row_counts):
            continue
        names.append(name)
        counts.append(row_counts)
        values.append(
            [
                round(float(w.metrics.loss[group]) / n, 6) if n else None  # type: ignore[union-attr]
                for w, n in zip(kept, row_counts, strict=True)
            ]
        )
    return {
        "metric_name": "error_rate" if task == CLASSIFICATION else "mae",
        "metric_window_ends": [iso(w.end) for w in kept],
        "metric_versions": names,
        "metric_by_version": values,
        "metric_counts_by_version": counts,
    }
