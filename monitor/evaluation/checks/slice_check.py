"""`slice_regression`: each slice value's error against the rest of the model's outcomes, on the
outcomes joined during the last `check_windows` windows (`monitor.evaluation.slices.compare_slices`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np

from monitor.contracts.alert import AlertKind, Evidence
from monitor.contracts.config import EvaluationConfig
from monitor.core.finding import Finding
from monitor.evaluation.checks.periods import stats
from monitor.evaluation.evidence import ScoreHistory, active, clean, settings_hash
from monitor.evaluation.significance import z_quantile
from monitor.evaluation.slices import compare_slices


def check_slices(
    model_id: str,
    horizon: np.ndarray,
    slice_scopes: list[tuple[int, str]],
    at: datetime,
    offset: int | None,
    *,
    proportion: bool,
    alpha: float,
    evaluation: EvaluationConfig,
    history: ScoreHistory,
    metric_history: Callable[[], dict[str, Any]],
) -> list[Finding]:
    """Compare each slice scope ((scope index, `name=value`)) with the overall scope (0)."""
    overall = stats(horizon, 0)
    slices = {name: stats(horizon, index) for index, name in slice_scopes}
    if not slices or overall.n == 0:
        return []
    results = compare_slices(
        overall,
        slices,
        alpha=alpha,
        margin=evaluation.slice_margin,
        min_samples=evaluation.slice_min_samples,
        proportion=proportion,
    )
    metric = "error_rate" if proportion else "mae"
    settings = {"test": "two_proportion_z" if proportion else "welch_z", "alpha": alpha,
                "margin": evaluation.slice_margin, "min_samples": evaluation.slice_min_samples,
                "check_windows": evaluation.check_windows}  # fmt: skip
    findings = []
    for result in results:
        history.remember(f"slice:{result.slice}", at.timestamp(), result.z)
        if not result.regressed:
            findings.append(clean(model_id, AlertKind.slice_regression, at, offset, result.slice))
            continue
        findings.append(
            active(
                model_id,
                kind=AlertKind.slice_regression,
                slice=result.slice,
                at=at,
                evidence=Evidence(
                    detector=f"slice_{settings['test']}",
                    score=float(result.z),
                    threshold=z_quantile(result.alpha),
                    window_end=at,
                    reference_size=int(overall.n - result.n),
                    current_size=result.n,
                    settings_hash=settings_hash(settings),
                    details={
                        f"{metric}_slice": round(result.metric, 6),
                        f"{metric}_overall": round(result.overall_metric, 6),
                        f"{metric}_rest": round(result.rest_metric, 6),
                        "difference": round(result.difference, 6),
                        "margin": result.margin,
                        "p_value": result.p_value,
                        "alpha": result.alpha,
                        **history.recent(f"slice:{result.slice}"),
                        **metric_history(),
                    },
                ),
                summary=f"{model_id}: slice {result.slice} {metric.replace('_', ' ')} {result.metric:.4g} vs "
                f"{result.overall_metric:.4g} overall ({result.n} outcomes, p={result.p_value:.2g})",
                offset=offset,
            )
        )
    return findings
