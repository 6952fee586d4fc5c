"""The embedding signal on 384-dimension vector features: planted shifts are found and named,
a stationary stream stays quiet, malformed vectors are counted, and the state resumes exactly.

The stream: 384 numbers per event, 16 latent factors of decreasing strength plus independent
noise, away from the origin (as real embeddings are). The warm-up (5,000 events, the default)
is run once per module and every test resumes from its state, so each one also checks that a
monitor rebuilt from state behaves as the one that saved it.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from monitor.contracts.alert import AlertKind
from monitor.contracts.batch import PredictionBatch, decode_batch
from monitor.contracts.config import FeatureType, MonitorConfig
from monitor.contracts.limits import EventLimits
from monitor.contracts.privacy import PrivacyPolicy
from monitor.contracts.validation import InvalidEvent, decode_prediction
from monitor.monitoring import embeddings
from monitor.monitoring.drift import count_detectors, detector_run_length
from monitor.monitoring.fleet import ModelMonitor
from monitor.observability.metrics import DriftlineMetrics

DIMENSION = 384
FACTORS = 16
CONFIG = MonitorConfig.model_validate(
    {"models": [{"model_id": "search", "features": {"query_emb": {"type": "vector", "dimension": DIMENSION}}}]}
)
LOADINGS = np.random.default_rng(20).standard_normal((DIMENSION, FACTORS)) * np.linspace(1.0, 0.2, FACTORS)


def vectors(rng: np.random.Generator, n: int, shift: np.ndarray | float = 0.0) -> np.ndarray:
    return rng.standard_normal((n, FACTORS)) @ LOADINGS.T + 0.3 * rng.standard_normal((n, DIMENSION)) + 0.5 + shift


def batch(rows: np.ndarray | list, start: int) -> PredictionBatch:
    """Events as a service sends them, through the batch decoder."""
    raws = [
        orjson.dumps(
            {
                "model_id": "search",
                "prediction_id": f"p{start + i}",
                "timestamp": datetime.fromtimestamp(1_704_067_200 + start + i, UTC).isoformat(),
                "features": {"query_emb": row.tolist() if isinstance(row, np.ndarray) else row,
                             "length": float((start + i) % 13)},
                "prediction": 0.5,
            }
        )
        for i, row in enumerate(rows)
    ]  # fmt: skip
    decoded = decode_batch(raws, positions=np.arange(start, start + len(rows)), kind="prediction")
    assert not decoded.rejected
    return decoded.predictions


def feed(monitor: ModelMonitor, rows: np.ndarray | list, start: int) -> list:
    return [raised.alert for raised in monitor.observe(batch(rows, start), [], [])]


@pytest.fixture(scope="module")
def warmed() -> dict:
    """A monitor's state after the 5,000-event warm-up and one quiet window."""
    monitor = ModelMonitor("search", CONFIG)
    rng = np.random.default_rng(1)
    for start in range(0, 6000, 1000):
        assert feed(monitor, vectors(rng, 1000), start) == []
    return monitor.to_state()


def resumed(state: dict) -> tuple[ModelMonitor, embeddings.VectorFeature]:
    monitor = ModelMonitor("search", CONFIG, json.loads(json.dumps(state)))
    return monitor, monitor.signals["embeddings"].features["query_emb"]  # type: ignore[attr-defined]


def test_the_drift_monitor_leaves_the_vector_feature_to_the_signal(warmed):
    monitor, feature = resumed(warmed)
    assert "query_emb" not in monitor.drift.features and "length" in monitor.drift.features
    assert monitor.drift.unknown_features == 0
    assert feature.test is not None and 1 <= feature.projection.components <= 32  # type: ignore[union-attr]
    # calibrated to the share of the budget the drift monitor's detectors get: same features, same count
    types = {name: f.type for name, f in monitor.drift.features.items()}
    assert monitor.drift.run_length() == detector_run_length(CONFIG, count_detectors(CONFIG.model("search"), types))
    assert (
        count_detectors(CONFIG.model("search"), {"length": FeatureType.numeric})
        == count_detectors(CONFIG.model("plain"), {"length": FeatureType.numeric}) + 1
    )


def test_a_planted_shift_along_a_component_is_found_and_named(warmed):
    monitor, feature = resumed(warmed)
    projection = feature.projection
    assert projection is not None
    rng = np.random.default_rng(2)
    assert feed(monitor, vectors(rng, 1000), 6000) == []
    # half a reference standard deviation along the second principal component
    shift = 0.5 * np.sqrt(projection.variances[1]) * projection.basis[:, 1]
    alerts = feed(monitor, vectors(rng, 1000, shift), 7000)

    assert [(a.kind, a.feature) for a in alerts] == [(AlertKind.feature_drift, "query_emb")]
    evidence = alerts[0].evidence
    assert evidence.details["components_moved_count"] == 1 and "moved along 1 of its" in alerts[0].summary
    component, share, mean_shift, spread = evidence.details["components_moved"][0]
    assert component == 2 and 0.4 < mean_shift < 0.6 and 0.9 < spread < 1.1 and 0 < share < 1
    assert evidence.score > evidence.threshold and evidence.detector == "embedding_shift"
    assert evidence.reference_version == feature.version and evidence.current_size == 1000
    assert "embedding 'query_emb' moved along" in alerts[0].summary and "component 2 (" in alerts[0].summary
    assert re.search(r"component 2 \(1\d% of the variance\) \+0\.[45]\d? sd", alerts[0].summary)


def test_the_embedding_test_exports_its_score_and_threshold(warmed):
    monitor, feature = resumed(warmed)
    metrics = DriftlineMetrics(CollectorRegistry())
    metrics.observe_model("search", monitor)
    labels = {"model": "search", "feature": "query_emb", "detector": "embedding_shift"}
    assert (
        metrics.registry.get_sample_value("driftline_drift_score", labels) == feature.history["embedding_shift"][-1][1]
    )
    assert metrics.registry.get_sample_value("driftline_drift_threshold", labels) == feature.test.threshold  # type: ignore[union-attr]


def test_a_stationary_stream_stays_quiet(warmed):
    monitor, feature = resumed(warmed)
    rng = np.random.default_rng(3)
    alerts = []
    for start in range(6000, 36_000, 2000):
        alerts += feed(monitor, vectors(rng, 2000), start)
    assert alerts == []
    scores = [score for _, score in feature.history["embedding_shift"]]
    assert len(scores) >= 20 and max(scores) < feature.test.threshold  # type: ignore[union-attr]


def test_a_shift_orthogonal_to_the_components_is_found_by_the_residual(warmed):
    monitor, feature = resumed(warmed)
    basis = feature.projection.basis  # type: ignore[union-attr]
    direction = np.random.default_rng(4).standard_normal(DIMENSION)
    direction -= basis @ (basis.T @ direction)
    shift = 2.5 * direction / np.linalg.norm(direction)  # 0.13 per coordinate, against noise of 0.3
    alerts = feed(monitor, vectors(np.random.default_rng(5), 1000, shift), 6000)

    assert [(a.kind, a.feature) for a in alerts] == [(AlertKind.feature_drift, "query_emb")]
    details = alerts[0].evidence.details
    assert details["off_component_shift"] > 2.3 > 3 * details["off_component_chance"]
    assert details["off_component_contribution"] > alerts[0].evidence.threshold
    assert details["components_moved"] == [] and "moved off its" in alerts[0].summary


def test_malformed_vectors_are_counted_and_reported_not_fed(warmed):
    monitor, feature = resumed(warmed)
    rng = np.random.default_rng(6)
    rows: list = [row.tolist() for row in vectors(rng, 1000)]
    for i in range(0, 1000, 10):
        rows[i] = rows[i][:-1]  # 383 numbers
    rows[5], rows[15], rows[25] = "not a vector", None, 3.5
    rows[35] = [1e300] * DIMENSION  # finite, but its square is not
    alerts = feed(monitor, rows, 6000)

    assert [(a.kind, a.feature) for a in alerts] == [(AlertKind.data_quality, "query_emb")]
    details = alerts[0].evidence.details
    assert (details["wrong_dimension"], details["non_finite"]) == (102, 1)
    assert details["malformed_vector_rate"] == pytest.approx(0.103)
    assert "383" not in alerts[0].summary and "102 not a list of 384 numbers" in alerts[0].summary
    # the window's moments hold only the 896 good vectors, and stay finite
    assert monitor.drift.unknown_features == 0 and feature.window.count == 0


def test_state_resumes_exactly_and_stays_small():
    rng = np.random.default_rng(7)
    first, second, third = vectors(rng, 2000), vectors(rng, 3500), vectors(rng, 1500)
    monitor = ModelMonitor("search", CONFIG)
    feed(monitor, first, 0)
    fitting = json.dumps(monitor.to_state()["signals"])  # mean and covariance of 2,000 vectors
    again = ModelMonitor("search", CONFIG, json.loads(json.dumps(monitor.to_state())))
    for m in (monitor, again):
        feed(m, second, 2000)  # fits the projection, keeps projected rows, calibrates
        feed(m, third, 5500)
    assert json.dumps(again.to_state()["signals"]) == json.dumps(monitor.to_state()["signals"])
    projection = again.signals["embeddings"].features["query_emb"].projection  # type: ignore[attr-defined]
    shifted = vectors(rng, 1000, 0.5 * np.sqrt(projection.variances[0]) * projection.basis[:, 0])
    assert [a.summary for a in feed(again, shifted, 7000)] == [a.summary for a in feed(monitor, shifted, 7000)] != []
    watching = json.dumps(monitor.to_state()["signals"])
    assert len(fitting) < 2_500_000 and len(watching) < 300_000  # the raw vectors would be ~60 MB


def test_an_undeclared_vector_is_counted_as_unknown_not_profiled():
    config = MonitorConfig.model_validate({"reference": {"warmup_events": 200}, "window": {"size_events": 200}})
    monitor = ModelMonitor("search", config)
    rng = np.random.default_rng(8)
    alerts = feed(monitor, vectors(rng, 300), 0) + feed(monitor, vectors(rng, 300), 300)
    assert alerts == [] and monitor.signals == {}
    assert "query_emb" not in monitor.drift.features and "length" in monitor.drift.features
    assert monitor.drift.unknown_features == 400  # every value after the warm-up
    assert len(json.dumps(monitor.to_state())) < 100_000


def test_contract_errors_name_the_field():
    def error(spec: dict) -> str:
        with pytest.raises(ValidationError) as caught:
            MonitorConfig.model_validate({"models": [{"model_id": "m", "features": {"emb": spec}}]})
        return str(caught.value)

    assert "dimension" in error({"type": "vector"})
    assert "dimension: only a `vector` feature" in error({"type": "numeric", "dimension": 3})
    assert "pii: hash on a vector feature" in error({"type": "vector", "dimension": 8, "pii": "hash"})
    assert "dimension" in error({"type": "vector", "dimension": 1})
    dropped = MonitorConfig.model_validate(
        {"models": [{"model_id": "m", "features": {"emb": {"type": "vector", "dimension": 8, "pii": "drop"}}}]}
    )
    assert not embeddings.EMBEDDINGS.wanted(dropped.model("m"))
    event = orjson.dumps({"model_id": "m", "prediction_id": "p", "timestamp": "2024-01-01T00:00:00Z",
                          "features": {"emb": [0.5] * 8, "x": 1.0}, "prediction": 1})  # fmt: skip
    policy = PrivacyPolicy.from_config(dropped, {})
    assert decode_batch([event], [0], privacy=policy).predictions.features[0] == {"x": 1.0}
    refused = event.replace(b'"prediction":1', b'"prediction":null')  # a dead letter keeps no number of it
    assert b"0.5" in refused and b"0.5" not in policy.redact(refused)

    raw = orjson.dumps({"model_id": "m", "prediction_id": "p", "timestamp": "2024-01-01T00:00:00Z",
                        "features": {"emb": [0.5] * 9}, "prediction": 1})  # fmt: skip
    with pytest.raises(InvalidEvent, match=r"value of feature 'emb' has 9 numbers, over the limit of 8"):
        decode_prediction(raw, EventLimits(max_vector_length=8))
    decoded = decode_batch([raw], positions=[0], limits=EventLimits(max_vector_length=8), kind="prediction")
    assert [error.reason.value for _, error in decoded.rejected] == ["limit"]
