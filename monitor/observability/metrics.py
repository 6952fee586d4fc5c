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

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

from monitor.contracts.alert import Alert, AlertStatus
from monitor.monitoring.drift import last_score
from monitor.monitoring.slice_drift import SliceDrift

if TYPE_CHECKING:
    from monitor.evaluation.join import JoinStore
    from monitor.monitoring.fleet import ModelMonitor

PERFORMANCE_METRICS = ("accuracy", "error_rate", "macro_f1", "f1", "log_loss", "brier", "ece", "cost_per_1000",
                       "mae", "rmse", "bias")  # fmt: skip
"""Metrics of a closed evaluation window exported per model, and per model and version; the
label-free estimates (CBPE: accuracy, f1, roc_auc) share their names where they overlap."""

ESTIMATED_METRICS = ("accuracy", "f1", "roc_auc")

# Prometheus' conventions: a counter is its `_total` series; a `_created` series beside every
# counter doubles the series for no query on-call writes.
disable_created_metrics()


def _closeness(score: float, threshold: float) -> float:
    """How near a detector is to its threshold (1: at it); 0 when either is not a number."""
    ratio = score / threshold if threshold > 0 else math.nan
    return ratio if math.isfinite(ratio) else 0.0


def _numbers(summary: dict[str, Any]) -> Iterable[tuple[str, float]]:
    """(metric, value) of the exported metrics a window summary holds as numbers."""
    for metric in (*PERFORMANCE_METRICS, "roc_auc"):
        value = summary.get(metric)
        if isinstance(value, int | float) and not isinstance(value, bool):
            yield metric, value


def _alert_labels(alert: Alert) -> tuple[str, ...]:
    """Labels of `driftline_alert_active`, in order: kind, model, feature, slice, severity."""
    return (alert.kind.value, alert.model_id, alert.feature or "", alert.slice or "", alert.severity.value)


class DriftlineMetrics:
    """The metrics, and the `observe_*` methods that read them off the core's objects (the core
    knows nothing of Prometheus)."""

    def __init__(self, registry: CollectorRegistry, max_drift_features: int = 50):
        self.registry = registry
        self.max_drift_features = max_drift_features
        """Features per model whose drift series are exported: those nearest their thresholds."""
        self._seen: dict[tuple[str, str], float] = {}
        """Last value of a core counter exported as a Prometheus counter, to add the difference."""
        self._series: dict[str, set[tuple[Gauge, tuple[str, ...]]]] = {}
        """Per-model gauge series set so far, by model."""
        self.events = Counter("driftline_events", "Valid events processed.", ["model", "type"], registry=registry)
        self.invalid_events = Counter(
            "driftline_invalid_events",
            "Events refused and dead-lettered, by reason.",
            ["source", "reason"],
            registry=registry,
        )
        self.model_errors = Counter(
            "driftline_model_errors",
            "Batches a model's monitor raised on (a bug): the model resumed from its last saved state.",
            ["model"],
            registry=registry,
        )
        self.oversize_states = Counter(
            "driftline_oversize_states",
            "State records over the largest a worker writes, not saved: its input positions are not saved "
            "either until they fit, so a restart replays everything since.",
            ["table"],
            registry=registry,
        )
        self.replayed_messages = Counter(
            "driftline_replayed_messages",
            "Input messages a saved state already covered, skipped (a replay after a restart).",
            ["agent"],
            registry=registry,
        )
        self.input_reseeks = Counter(
            "driftline_input_reseeks",
            "Times an input partition was sought back to a message the consumer skipped.",
            ["topic"],
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
        self.drift_features_hidden = Gauge(
            "driftline_drift_features_hidden",
            "Features of a model whose drift series are not exported (metrics.max_drift_features_per_model).",
            ["model"],
            registry=registry,
        )
        self.slices_watched = Gauge(
            "driftline_slices_watched",
            "Values of a slice key with drift detectors of their own (`slice_drift`, at most `max_slices`).",
            ["model", "key"],
            registry=registry,
        )
        self.slice_events_left_out = Counter(
            "driftline_slice_events_left_out",
            "Events whose value of a slice key is not watched for drift (left out by `slice_drift.max_slices`).",
            ["model", "key"],
            registry=registry,
        )
        self.performance = Gauge(
            "driftline_model_performance",
            "Latest value of an evaluation metric, every version of the model together.",
            ["model", "metric"],
            registry=registry,
        )
        self.version_performance = Gauge(
            "driftline_model_version_performance",
            "Latest value of an evaluation metric of one model version.",
            ["model", "version", "metric"],
            registry=registry,
        )
        self.estimated_performance = Gauge(
            "driftline_model_estimated_performance",
            "Label-free estimate (CBPE) of an evaluation metric of the last closed window, before its labels.",
            ["model", "metric"],
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
        """A notification published: counted, and its `driftline_alert_active` series set at once
        (`observe_model` reconciles all of a model's series with its lifecycle)."""
        self._set(
            alert.model_id, self.alert_active, _alert_labels(alert), 1 if alert.status is AlertStatus.firing else 0
        )
        self.alerts.labels(kind=alert.kind, status=alert.status).inc()

    def _set(self, model_id: str, gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
        """Set a per-model gauge series and remember it, so `forget_model` can remove it."""
        gauge.labels(*labels).set(value)
        self._series.setdefault(model_id, set()).add((gauge, labels))

    def _add_difference(self, counter: Any, key: tuple[str, str], value: float) -> None:
        """Add what a core counter gained since last time; a counter that went down was restored
        from older state, so all of it is new."""
        last = self._seen.get(key, 0.0)
        counter.inc(value - last if value >= last else value)
        self._seen[key] = value

    def observe_model(self, model_id: str, monitor: ModelMonitor) -> None:
        """Everything about one model, read off its monitor: alerts active in its lifecycle (1, and
        0 for those exported before that no longer are: a restarted worker re-exports what its
        restored state has firing), drift scores and thresholds, late events, windows closed and
        the last closed window's performance, and what slice drift watches and leaves out."""
        active = {_alert_labels(a.alert) for a in monitor.lifecycle.active.values()}
        exported = {labels for gauge, labels in self._series.get(model_id, ()) if gauge is self.alert_active}
        for labels in active | exported:
            self._set(model_id, self.alert_active, labels, 1 if labels in active else 0)
        drift = monitor.drift
        self._add_difference(self.late_events.labels(model=model_id), ("late", model_id), drift.clock.late_events)
        self._add_difference(self.windows_closed.labels(model=model_id), ("windows", model_id), monitor.windows_closed)
        by_feature = {}
        for feature in drift.features.values():
            scores = [(d.name, d.score, d.threshold) for d in feature.sequential]
            for test in feature.tests:
                scores.append((test.name, last_score(feature.history, test.name), test.threshold))
            by_feature[feature.name] = scores
        for signal in monitor.signals.values():  # a signal with a calibrated score exports it like a feature
            by_feature.update(getattr(signal, "drift_scores", dict)())
        # Series grow as models x features x detectors: export the features nearest their
        # thresholds (alarming ones first), count the others.
        nearest = sorted(
            by_feature, key=lambda name: -max((_closeness(s, t) for _, s, t in by_feature[name]), default=0)
        )
        shown = set(nearest[: self.max_drift_features])
        for gauge in (self.drift_score, self.drift_threshold):
            for series in [x for x in self._series.get(model_id, ()) if x[0] is gauge and x[1][1] not in shown]:
                gauge.remove(*series[1])
                self._series[model_id].discard(series)
        self._set(model_id, self.drift_features_hidden, (model_id,), len(by_feature) - len(shown))
        for name in shown:
            for detector, score, threshold in by_feature[name]:
                self._set(model_id, self.drift_score, (model_id, name, detector), score)
                self._set(model_id, self.drift_threshold, (model_id, name, detector), threshold)
        slices = monitor.signals.get("slice_drift")
        if isinstance(slices, SliceDrift):
            for key, watched in slices.watched.items():
                self._set(model_id, self.slices_watched, (model_id, key), len(watched.shares))
                left_out = self.slice_events_left_out.labels(model=model_id, key=key)
                self._add_difference(left_out, ("slice_left_out", f"{model_id}\x1f{key}"), watched.events_left_out)
        windows = monitor.evaluator.window_metrics(last=1)
        if windows:
            window = windows[-1]
            for metric, value in _numbers(window["overall"]):
                self._set(model_id, self.performance, (model_id, metric), value)
            for version, summary in window["versions"].items():
                for metric, value in _numbers(summary):
                    self._set(model_id, self.version_performance, (model_id, version, metric), value)
            for metric, value in _numbers({k: (window["cbpe"] or {}).get(k) for k in ESTIMATED_METRICS}):
                self._set(model_id, self.estimated_performance, (model_id, metric), value)

    def forget_model(self, model_id: str) -> None:
        """Remove a model's gauge series (it moved to another worker in a rebalance): a stale
        `driftline_alert_active` 1 here would keep the alert firing after the new owner resolved
        it. Counters stay: their rate falls to 0 here and rises on the new owner."""
        for gauge, labels in self._series.pop(model_id, ()):
            try:
                gauge.remove(*labels)
            except KeyError:
                pass

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
