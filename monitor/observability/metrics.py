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

from prometheus_client import CollectorRegistry, Counter, Gauge


class DriftlineMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
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
