"""`serving_degradation`: latency p99 and request error rate of each model version per window.

Serving signals ride on the predictions (`latency_ms`, `request_status`); they are folded into
the open window's stats per version, checked when the window closes (p99 over
`max_latency_ms_p99`, or an error rate significantly over `max_request_error_rate`, a one-sided
binomial test), then folded into all-time stats per version for the metrics report.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from monitor.contracts.alert import AlertKind, Evidence
from monitor.contracts.config import EvaluationConfig
from monitor.core.finding import Finding
from monitor.evaluation.evidence import active, clean, settings_hash, to_time
from monitor.evaluation.ledger import Window
from monitor.evaluation.metrics import ServingStats


class ServingCheck:
    """All-time serving stats per version code, and the window check."""

    def __init__(self, model_id: str, evaluation: EvaluationConfig, *, alpha: float, min_events: int):
        self.model_id = model_id
        self.evaluation = evaluation
        self.alpha = alpha
        self.min_events = min_events
        self.all_time: list[ServingStats] = []

    def add_version(self, _code: int) -> None:
        self.all_time.append(ServingStats())

    @staticmethod
    def add(window: Window, rows: list[tuple[int, float | None, str | None]]) -> None:
        """Fold (version, latency, status) rows into a window's stats."""
        serving = window.serving
        for version, latency, status in rows:
            stats = serving.get(version)
            if stats is None:
                stats = serving[version] = ServingStats()
            stats.add(latency, status)

    def fold(self, window: Window) -> None:
        """A closed, checked window's stats join the all-time stats."""
        for version, stats in window.serving.items():
            self.all_time[version].merge(stats)
        window.serving = {}

    def summary(self, version: int, *more: ServingStats | None) -> dict[str, Any]:
        """All-time serving stats of a version, with `more` (the open window's) added."""
        total = ServingStats()
        total.merge(self.all_time[version])
        for stats in more:
            if stats is not None:
                total.merge(stats)
        return total.summary()

    def check(self, window: Window, versions: list[str], at: datetime, offset: int | None) -> list[Finding]:
        max_p99 = self.evaluation.max_latency_ms_p99
        max_error_rate = self.evaluation.max_request_error_rate
        if (max_p99 is None and max_error_rate is None) or not window.serving:
            return []
        checked = False
        worst: tuple[float, Finding] | None = None
        level = self.alpha / max(1, len(window.serving))
        for version, stats in sorted(window.serving.items()):
            name = versions[version]
            if max_p99 is not None and stats.latency_count >= self.min_events:
                checked = True
                p99 = stats.latency_quantile(0.99)
                assert p99 is not None
                if p99 > max_p99:
                    severity = p99 / max_p99
                    if worst is None or severity > worst[0]:
                        text = f"latency p99 {p99:.1f} ms over {max_p99:.1f} ms"
                        finding = self._finding(
                            window, at, offset, name, "latency_p99_bound", p99, max_p99, stats, text
                        )
                        worst = (severity, finding)
            if max_error_rate is not None and stats.requests >= self.min_events:
                checked = True
                rate = stats.errors / stats.requests
                p_value = binomial_upper(stats.errors, stats.requests, max_error_rate)
                if rate > max_error_rate and p_value < level:
                    severity = rate / max_error_rate
                    if worst is None or severity > worst[0]:
                        text = f"request error rate {rate:.2%} over {max_error_rate:.2%} (p={p_value:.2g})"
                        finding = self._finding(
                            window, at, offset, name, "request_error_rate_binomial", rate, max_error_rate, stats, text
                        )
                        worst = (severity, finding)
        if worst is not None:
            return [worst[1]]
        if checked:
            return [clean(self.model_id, AlertKind.serving_degradation, at, offset)]
        return []

    def _finding(
        self, window: Window, at: datetime, offset: int | None, version: str, rule: str, score: float,
        threshold: float, stats: ServingStats, text: str,
    ) -> Finding:  # fmt: skip
        summary = stats.summary()
        details = {k: v for k, v in summary.items() if v is not None}
        details["alpha"] = self.alpha
        return active(
            self.model_id,
            kind=AlertKind.serving_degradation,
            at=at,
            model_version=version,
            evidence=Evidence(
                detector=rule,
                score=float(score),
                threshold=float(threshold),
                window_start=to_time(window.start) if math.isfinite(window.start) else None,
                window_end=at,
                current_size=max(stats.requests, stats.latency_count),
                settings_hash=settings_hash({"rule": rule, "threshold": threshold, "alpha": self.alpha}),
                details=details,
            ),
            summary=f"{self.model_id} version {version}: {text}",
            offset=offset,
        )


def binomial_upper(errors: int, n: int, rate: float) -> float:
    """P(X >= errors) for X ~ Binomial(n, rate): chance of this many errors at the allowed rate."""
    from scipy.stats import binom

    return float(binom.sf(errors - 1, n, rate))
