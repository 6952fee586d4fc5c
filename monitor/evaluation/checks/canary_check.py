"""`canary_regression`: each model version against its baseline, on the outcomes joined during
the last `check_windows` windows (`monitor.evaluation.canary.compare_versions`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np

from monitor.contracts.alert import AlertKind, Evidence
from monitor.contracts.config import EvaluationConfig
from monitor.core.finding import Finding
from monitor.evaluation.canary import compare_versions
from monitor.evaluation.checks.periods import stats
from monitor.evaluation.evidence import ScoreHistory, active, clean, settings_hash
from monitor.evaluation.labels import OTHER
from monitor.evaluation.significance import z_quantile


def check_canary(
    model_id: str,
    horizon: np.ndarray,
    versions: list[str],
    version_scope: list[int],
    at: datetime,
    offset: int | None,
    *,
    proportion: bool,
    alpha: float,
    evaluation: EvaluationConfig,
    baseline: str | None,
    history: ScoreHistory,
    metric_history: Callable[[], dict[str, Any]],
) -> list[Finding]:
    """Compare every version with outcomes (but `other`) with the baseline; `proportion` for
    error rates (classification), else mean absolute errors. `metric_history` is the evidence's
    per-window metric trend."""
    per_version = {
        name: stats(horizon, version_scope[code])
        for code, name in enumerate(versions)
        if name != OTHER and stats(horizon, version_scope[code]).n > 0
    }
    if len(per_version) < 2:
        if not per_version:
            return []
        return [clean(model_id, AlertKind.canary_regression, at, offset)]
    results = compare_versions(
        per_version,
        alpha=alpha,
        margin=evaluation.canary_margin,
        min_samples=evaluation.canary_min_samples,
        baseline=baseline,
        proportion=proportion,
    )
    if not results:
        return []
    for result in results:
        history.remember(f"canary:{result.canary}", at.timestamp(), result.z)
    regressed = [r for r in results if r.regressed]
    if not regressed:
        return [clean(model_id, AlertKind.canary_regression, at, offset)]
    worst = max(regressed, key=lambda r: r.difference)
    metric = "error_rate" if proportion else "mae"
    settings = {"test": "two_proportion_z" if proportion else "welch_z", "alpha": alpha,
                "margin": evaluation.canary_margin, "min_samples": evaluation.canary_min_samples,
                "check_windows": evaluation.check_windows}  # fmt: skip
    return [
        active(
            model_id,
            kind=AlertKind.canary_regression,
            at=at,
            model_version=worst.canary,
            evidence=Evidence(
                detector=settings["test"],
                score=float(worst.z),
                threshold=z_quantile(worst.alpha),
                window_end=at,
                reference_size=worst.baseline_n,
                current_size=worst.canary_n,
                settings_hash=settings_hash(settings),
                details={
                    "baseline_version": worst.baseline,
                    f"{metric}_baseline": round(worst.baseline_metric, 6),
                    f"{metric}_canary": round(worst.canary_metric, 6),
                    "difference": round(worst.difference, 6),
                    "margin": worst.margin,
                    "p_value": worst.p_value,
                    "alpha": worst.alpha,
                    "versions_regressed": [r.canary for r in regressed],
                    **history.recent(f"canary:{worst.canary}"),
                    **metric_history(),
                },
            ),
            summary=f"{model_id}: version {worst.canary} {metric.replace('_', ' ')} {worst.canary_metric:.4g} "
            f"vs {worst.baseline_metric:.4g} for baseline {worst.baseline} ({worst.canary_n} and "
            f"{worst.baseline_n} outcomes, p={worst.p_value:.2g})",
            offset=offset,
        )
    ]
