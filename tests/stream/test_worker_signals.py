"""The optional signals on the Kafka path: `driftline worker` on the real broker finds a change in
one slice of ten, a change in what drives the predictions and a shifted embedding, published by
the project's client and by plain kafka-python, and says so on the alerts topic.

One stream plants all three, at the same event, in different parts of the model: from `CHANGE_AT`
on, `x` is one standard deviation higher in country C3 only (a tenth of the traffic: a tenth of a
standard deviation on all of it); the model's weights on `x` and `z` swap, while the inputs (and
the scores' distribution) stay as they were; and the 384-number embedding `emb` moves along one
of the directions it varies in.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer
from worker_support import log_tail, start_worker, stop_worker

from monitor.client.publisher import DriftlinePublisher
from monitor.contracts.alert import Alert, AlertStatus
from monitor.contracts.config import KafkaConfig
from monitor.kafka.settings import consumer_settings, producer_settings
from monitor.kafka.topics import ensure_topics

pytestmark = pytest.mark.broker

MODEL = "signals-model"
EVENTS, CHANGE_AT = 12_000, 8_000
BEFORE = np.array([2.0, 1.0, 0.5])
AFTER = np.array([0.5, 1.0, 2.0])
DIMENSION, LATENT = 384, 8
"""Weights of `x`, `y`, `z`: a linear model whose exact attributions are weight x input."""
SETTINGS = {
    "reference": {"warmup_events": 1000},
    "window": {"size_events": 500, "min_events": 100},
    "models": [
        {
            "model_id": MODEL,
            "slice_drift": {"keys": ["country"], "reference_events": 500},
            "attribution": {"top_features": 3},
            "features": {"emb": {"type": "vector", "dimension": DIMENSION}},
        }
    ],
}


def _events(first: int, last: int) -> list[dict]:
    rng = np.random.default_rng(11)
    inputs = rng.standard_normal((EVENTS, 3))
    country = rng.integers(0, 10, EVENTS)
    basis = rng.standard_normal((LATENT, DIMENSION)) / np.sqrt(DIMENSION)
    latent = rng.standard_normal((EVENTS, LATENT))
    latent[CHANGE_AT:, 0] += 1.0
    embeddings = (latent @ basis + 0.05 * rng.standard_normal((EVENTS, DIMENSION))).round(4)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(first, last):
        values = inputs[i].copy()
        if i >= CHANGE_AT and country[i] == 3:
            values[0] += 1.0
        shap = values * (AFTER if i >= CHANGE_AT else BEFORE)
        out.append(
            {
                "model_id": MODEL,
                "model_version": "v1",
                "prediction_id": f"p{i}",
                "timestamp": (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
                "features": {**dict(zip("xyz", values.tolist(), strict=True)), "emb": embeddings[i].tolist()},
                "prediction": float(shap.sum()),
                "slices": {"country": f"C{country[i]}"},
                "attributions": dict(zip("xyz", shap.tolist(), strict=True)),
            }
        )
    return out


def _publish(kafka_config: KafkaConfig) -> None:
    """The first part with the project's publisher (envelopes), the rest one event per message
    from kafka-python, as a service in another language would send them."""
    with DriftlinePublisher(kafka_config) as publisher:
        for event in _events(0, CHANGE_AT - 1000):
            publisher.publish_prediction(**event)
        publisher.flush(timeout=10)
    producer = KafkaProducer(**producer_settings(kafka_config))
    for event in _events(CHANGE_AT - 1000, EVENTS):
        producer.send(kafka_config.topics.predictions, key=MODEL.encode(), value=json.dumps(event).encode())
    producer.flush(timeout=10)
    producer.close()


def test_worker_finds_a_drifted_slice_a_change_in_what_drives_the_predictions_and_a_moved_embedding(
    tmp_path, kafka_config
):
    ensure_topics(kafka_config)
    worker = start_worker(tmp_path, kafka_config, SETTINGS)
    consumer = KafkaConsumer(
        kafka_config.topics.alerts,
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=500),
    )
    try:
        _publish(kafka_config)
        alerts: list[Alert] = []
        deadline = time.monotonic() + 90

        def found() -> tuple[list[Alert], list[Alert], list[Alert]]:
            firing = [a for a in alerts if a.status is AlertStatus.firing]
            sliced = [a for a in firing if a.kind == "feature_drift" and a.slice is not None]
            embedding = [a for a in firing if a.kind == "feature_drift" and a.feature == "emb"]
            return sliced, [a for a in firing if a.kind == "attribution_drift"], embedding

        while time.monotonic() < deadline and worker.poll() is None:
            alerts += [Alert.model_validate_json(record.value) for record in consumer]
            if all(found()):
                break
        log = log_tail(tmp_path / "worker.log")
        assert worker.poll() is None, f"worker exited:\n{log}"
        sliced, attribution, embedding = found()
        assert [(a.feature, a.slice) for a in sliced] == [("x", "country=C3")], (
            f"{[(a.kind, a.feature, a.slice) for a in alerts]}\n{log}"
        )
        assert "slice country=C3" in sliced[0].summary
        assert sliced[0].evidence.details["slice_share"] == pytest.approx(0.1, abs=0.03)
        assert attribution, f"no attribution_drift; got {[(a.kind, a.feature, a.slice) for a in alerts]}\n{log}"
        ranked = attribution[0].evidence.details["changed"]
        assert {row[0] for row in ranked[:2]} == {"x", "z"}  # type: ignore[index]
        assert attribution[0].starts_at >= datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=CHANGE_AT)
        assert embedding, f"no feature_drift on 'emb'; got {[(a.kind, a.feature, a.slice) for a in alerts]}\n{log}"
        assert embedding[0].starts_at >= datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=CHANGE_AT)
        assert "embedding 'emb' moved" in embedding[0].summary
    finally:
        consumer.close()
        stop_worker(worker)
