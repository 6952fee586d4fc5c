"""Prometheus metrics read off the core: what a worker exports about a model, including after a
restart (state restored) and after the model moved to another worker."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from monitor.contracts.alert import AlertStatus
from monitor.contracts.batch import columns_of
from monitor.contracts.config import MonitorConfig
from monitor.contracts.events import PredictionEvent
from monitor.monitoring.fleet import FleetMonitor, ModelMonitor
from monitor.observability.metrics import DriftlineMetrics

MODEL = "fraud-scorer"
CONFIG = MonitorConfig.model_validate({"reference": {"warmup_events": 500}, "window": {"size_events": 200}})


def _drifted_monitor() -> tuple[ModelMonitor, list]:
    rng = random.Random(5)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        PredictionEvent.model_validate(
            {"model_id": MODEL, "prediction_id": f"p{i}", "model_version": "v1", "prediction": 0.5,
             "timestamp": start + timedelta(seconds=i),
             "features": {"amount": rng.gauss(0, 1) + (3 if i >= 900 else 0), "age": rng.gauss(40, 5)}}
        )
        for i in range(1600)
    ]  # fmt: skip
    fleet = FleetMonitor(CONFIG)
    raised = fleet.observe(*columns_of(events, range(len(events))))
    return fleet.models[MODEL], [r.alert for r in raised]


def _active(metrics: DriftlineMetrics, feature: str) -> float | None:
    labels = {"kind": "feature_drift", "model": MODEL, "feature": feature, "slice": "", "severity": "warning"}
    return metrics.registry.get_sample_value("driftline_alert_active", labels)


def test_a_model_exports_its_firing_alerts_and_drift_scores_also_after_a_restart():
    monitor, alerts = _drifted_monitor()
    assert any(a.kind == "feature_drift" and a.feature == "amount" for a in alerts)
    metrics = DriftlineMetrics(CollectorRegistry())
    metrics.observe_model(MODEL, monitor)
    assert _active(metrics, "amount") == 1.0
    assert _active(metrics, "age") is None  # never fired: no series
    for detector in ("cusum", "ks"):  # the default numeric detectors, each with its calibrated threshold
        labels = {"model": MODEL, "feature": "amount", "detector": detector}
        assert metrics.registry.get_sample_value("driftline_drift_score", labels) is not None
        assert 0 < metrics.registry.get_sample_value("driftline_drift_threshold", labels) < float("inf")

    # A restarted worker has no notification to publish, but its restored state is firing.
    restarted = DriftlineMetrics(CollectorRegistry())
    restarted.observe_model(MODEL, ModelMonitor(MODEL, CONFIG, monitor.to_state()))
    assert _active(restarted, "amount") == 1.0


def test_resolved_alerts_read_0_and_a_model_that_moved_away_has_no_series():
    monitor, alerts = _drifted_monitor()
    metrics = DriftlineMetrics(CollectorRegistry())
    metrics.observe_model(MODEL, monitor)
    firing = next(a for a in alerts if a.feature == "amount")
    metrics.observe_alert(firing.model_copy(update={"status": AlertStatus.resolved}))
    assert _active(metrics, "amount") == 0.0
    assert (
        metrics.registry.get_sample_value("driftline_alerts_total", {"kind": "feature_drift", "status": "resolved"})
        == 1
    )
    monitor.lifecycle.active.clear()  # what the lifecycle holds after the resolution
    metrics.observe_model(MODEL, monitor)
    assert _active(metrics, "amount") == 0.0

    metrics.forget_model(MODEL)
    assert _active(metrics, "amount") is None
    assert (
        metrics.registry.get_sample_value(
            "driftline_drift_score", {"model": MODEL, "feature": "amount", "detector": "ks"}
        )
        is None
    )


def test_performance_is_exported_overall_per_version_and_estimated_with_no_created_series():
    """Realised metrics overall (no pseudo-version label: summing over versions must not double
    count) and per version, CBPE's estimate beside them, and no `_created` series."""
    from prometheus_client import generate_latest

    from monitor.contracts.batch import OutcomeBatch, PredictionBatch
    from monitor.contracts.events import OutcomeEvent

    rng = random.Random(8)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    predictions, outcomes = [], []
    for i in range(3000):
        p = rng.random()
        fields = {"model_id": MODEL, "prediction_id": f"p{i}", "model_version": f"v{i % 2}", "prediction": int(p > 0.5),
                  "probabilities": {"0": 1 - p, "1": p}, "timestamp": start + timedelta(seconds=i),
                  "features": {"amount": rng.gauss(0, 1), "age": rng.gauss(40, 5)}}  # fmt: skip
        predictions.append(PredictionEvent.model_validate(fields))
        outcomes.append(OutcomeEvent(prediction_id=f"p{i}", label=int(rng.random() < p), timestamp=start))
    fleet = FleetMonitor(CONFIG)
    for at in range(0, 3000, 500):
        fleet.observe(PredictionBatch.from_events(predictions[at : at + 500], range(at, at + 500)))
        fleet.observe(PredictionBatch.empty(), OutcomeBatch.from_events(outcomes[at : at + 500], range(at, at + 500)))
    metrics = DriftlineMetrics(CollectorRegistry())
    metrics.observe_model(MODEL, fleet.models[MODEL])
    sample = metrics.registry.get_sample_value
    overall = sample("driftline_model_performance", {"model": MODEL, "metric": "accuracy"})
    by_version = [
        sample("driftline_model_version_performance", {"model": MODEL, "version": v, "metric": "accuracy"})
        for v in ("v0", "v1")
    ]
    estimated = sample("driftline_model_estimated_performance", {"model": MODEL, "metric": "accuracy"})
    assert overall is not None and None not in by_version and estimated is not None
    assert min(by_version) <= overall <= max(by_version)
    assert abs(estimated - overall) < 0.1  # calibrated probabilities: the estimate is close
    assert b"_created" not in generate_latest(metrics.registry)


def test_drift_series_are_bounded_per_model_nearest_the_threshold_first_and_the_rest_counted():
    monitor, _ = _drifted_monitor()
    metrics = DriftlineMetrics(CollectorRegistry(), max_drift_features=1)
    metrics.observe_model(MODEL, monitor)
    sample = metrics.registry.get_sample_value
    ks = {"model": MODEL, "detector": "ks"}
    assert sample("driftline_drift_score", {**ks, "feature": "amount"}) is not None  # the drifted one
    assert sample("driftline_drift_score", {**ks, "feature": "age"}) is None
    assert sample("driftline_drift_threshold", {**ks, "feature": "age"}) is None
    # the model's score (__prediction__) and age are hidden, and said to be
    assert sample("driftline_drift_features_hidden", {"model": MODEL}) == len(monitor.drift.features) - 1
    wider = DriftlineMetrics(CollectorRegistry())
    wider.observe_model(MODEL, monitor)
    assert wider.registry.get_sample_value("driftline_drift_score", {**ks, "feature": "age"}) is not None
    assert wider.registry.get_sample_value("driftline_drift_features_hidden", {"model": MODEL}) == 0
