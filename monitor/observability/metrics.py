"""Prometheus metrics of a Driftline process: one place that names them all.

Label values stay low-cardinality: model, version, feature, detector, kind, reason; never
prediction ids. The registry is passed in, so tests use a fresh one and read samples with
`registry.get_sample_value(...)`.

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> metrics = DriftlineMetrics(registry)
>>> metrics.events.labels(model="fraud", type="prediction").inc(3)
>>> registry.get_sample_value("driftline_events_total", {"model": "fraud", "type": "prediction"})
3.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.contracts.alert import Alert, AlertStatus

if TYPE_CHECKING:
    from monitor.evaluation.join import JoinStore
    from monitor.monitoring.fleet import ModelMonitor

PERFORMANCE_METRICS = ("accuracy", "error_rate", "macro_f1", "f1", "log_loss", "brier", "ece", "cost_per_1000",
                       "mae", "rmse", "bias")  # fmt: skip
"""Metrics of a closed evaluation window exported per model and version (`version="all"`: overall)."""


class DriftlineMetrics:
    """The metrics, and the `observe_*` methods that read them off the core's objects (the core
    knows nothing of Prometheus)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self._seen: dict[tuple[str, str], float] = {}
        """Last value of a core counter exported as a Prometheus counter, to add the difference."""
        self.events = Counter("driftline_events", "Valid events processed.", ["model", "type"], registry=registry)
        self.invalid_events = Counter(
            "driftline_invalid_events",
            "Events refused and dead-lettered, by reason.",
            ["source", "reason"],
            registry=registry,
        )
        self.late_events = Counter(
            "driftline_late_events",
            "Events after their window closed (counted, not monitored).",
            ["model"],
            registry=registry,
        )
        self.windows_closed = Counter(
            "driftline_windows_closed", "Monitoring windows closed.", ["model"], registry=registry
        )
        self.join_pending = Gauge(
            "driftline_join_pending_predictions", "Predictions waiting for their outcome.", registry=registry
        )
        self.join_expired = Counter(
            "driftline_join_expired_predictions",
            "Predictions whose outcome never came within the TTL.",
            ["model"],
            registry=registry,
        )
        self.label_coverage = Gauge(
            "driftline_label_coverage_ratio",
            "Share of predictions that received their outcome.",
            ["model"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "driftline_consumer_lag_messages",
            "Messages behind the end of each input partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.drift_score = Gauge(
            "driftline_drift_score",
            "Latest statistic of a drift detector.",
            ["model", "feature", "detector"],
            registry=registry,
        )
        self.drift_threshold = Gauge(
            "driftline_drift_threshold",
            "Calibrated threshold of a drift detector.",
            ["model", "feature", "detector"],
            registry=registry,
        )
        self.performance = Gauge(
            "driftline_model_performance",
            "Latest value of an evaluation metric.",
            ["model", "version", "metric"],
            registry=registry,
        )
        self.alert_active = Gauge(
            "driftline_alert_active",
            "1 while the alert fires, 0 once resolved.",
            ["kind", "model", "feature", "slice", "severity"],
            registry=registry,
        )
        self.alerts = Counter(
            "driftline_alerts",
            "Alert notifications published, by kind and status.",
            ["kind", "status"],
            registry=registry,
        )

    # -- reading the core -----------------------------------------------------------------------------

    def observe_alert(self, alert: Alert) -> None:
        """`driftline_alert_active` is 1 while the alert fires and 0 once it resolved (a series
        that disappeared would look like a scrape gap to Prometheus's `for:`)."""
        self.alert_active.labels(
            kind=alert.kind,
            model=alert.model_id,
            feature=alert.feature or "",
            slice=alert.slice or "",
            severity=alert.severity,
        ).set(1 if alert.status is AlertStatus.firing else 0)
        self.alerts.labels(kind=alert.kind, status=alert.status).inc()

    def _add_difference(self, counter: Any, key: tuple[str, str], value: float) -> None:
        """Add what a core counter gained since last time; a counter that went down was restored
        from older state, so all of it is new."""
        last = self._seen.get(key, 0.0)
        counter.inc(value - last if value >= last else value)
        self._seen[key] = value

    def observe_model(self, model_id: str, monitor: ModelMonitor) -> None:
        """Drift scores and thresholds, late events, windows closed and the last closed window's
        performance of one model."""
        drift = monitor.drift
        self._add_difference(self.late_events.labels(model=model_id), ("late", model_id), drift.clock.late_events)
        self._add_difference(self.windows_closed.labels(model=model_id), ("windows", model_id), monitor.windows_closed)
        for feature in drift.features.values():
            for detector in feature.sequential:
                self._drift(model_id, feature.name, detector.name, detector.score, detector.threshold)
            for test in feature.tests:
                history = feature.history.get(test.name)
                self._drift(model_id, feature.name, test.name, history[-1][1] if history else math.nan, test.threshold)
        windows = monitor.evaluator.window_metrics(last=1)
        if windows:
            window = windows[-1]
            for version, summary in {"all": window["overall"], **window["versions"]}.items():
                for metric in PERFORMANCE_METRICS:
                    value = summary.get(metric)
                    if isinstance(value, int | float):
                        self.performance.labels(model=model_id, version=version, metric=metric).set(value)

    def _drift(self, model_id: str, feature: str, detector: str, score: float, threshold: float) -> None:
        labels = {"model": model_id, "feature": feature, "detector": detector}
        self.drift_score.labels(**labels).set(score)
        self.drift_threshold.labels(**labels).set(threshold)

    def observe_joins(self, stores: Iterable[JoinStore]) -> None:
        """Backlog, expiries and label coverage summed over this process's join stores."""
        pending = 0
        counts: dict[str, tuple[int, int]] = {}
        for store in stores:
            pending += store.pending
            for model_id in store.metrics():
                c = store.counters(model_id)
                joined, expired = counts.get(model_id, (0, 0))
                counts[model_id] = (joined + c["joined"], expired + c["expired"])
        self.join_pending.set(pending)
        for model_id, (joined, expired) in counts.items():
            self._add_difference(self.join_expired.labels(model=model_id), ("expired", model_id), expired)
            if joined + expired:
                self.label_coverage.labels(model=model_id).set(joined / (joined + expired))

    def observe_lag(self, ends: dict[tuple[str, int], int], positions: dict[tuple[str, int], int]) -> None:
        """Messages between each input partition's end (`ends`, from the consumer's fetches) and
        the next offset this process will handle (`positions`). On the embedded broker the end
        can read low (BROKER.md), so lag there is a lower bound.

        >>> from prometheus_client import CollectorRegistry
        >>> metrics = DriftlineMetrics(CollectorRegistry())
        >>> metrics.observe_lag({("predictions", 0): 120}, {("predictions", 0): 100})
        >>> labels = {"topic": "predictions", "partition": "0"}
        >>> metrics.registry.get_sample_value("driftline_consumer_lag_messages", labels)
        20.0
        """
        for (topic, partition), end in ends.items():
            position = positions.get((topic, partition))
            if position is not None:
                self.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(0, end - position))
