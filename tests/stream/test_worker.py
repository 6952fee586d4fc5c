"""`driftline worker` end to end on the real broker: predictions in, alerts and dead letters out.

The worker runs as its own process (`run_worker`, the config in a YAML file), as in production;
the test talks to it only through Kafka, with the publisher and plain kafka-python.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer

from monitor.client.publisher import DriftlinePublisher
from monitor.contracts.alert import Alert
from monitor.contracts.config import KafkaConfig
from monitor.contracts.deadletter import DeadLetter
from monitor.stream.kafka_settings import consumer_settings, producer_settings
from monitor.stream.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fraud-scorer"
WARMUP, WINDOW, EVENTS, SHIFT_AT = 500, 200, 1500, 900
INVALID = {
    b"\xff\xfe not utf-8": "undecodable",
    b"[1, 2, 3]": "undecodable",
    json.dumps({"model_id": MODEL, "prediction_id": "broken"}).encode(): "schema",
}

pytestmark = pytest.mark.broker


def _start_worker(tmp_path: Path, kafka_config: KafkaConfig) -> subprocess.Popen:
    config = {
        "reference": {"warmup_events": WARMUP},
        "window": {"size_events": WINDOW},
        "kafka": kafka_config.model_dump(mode="json", exclude_none=True),
    }
    path = tmp_path / "driftline.yaml"
    path.write_text(yaml.safe_dump(config))
    code = (
        "from monitor.contracts.config import load_config; from monitor.stream.worker import run_worker;"
        f"run_worker(load_config({str(path)!r}))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)


def _publish(kafka_config: KafkaConfig) -> None:
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with DriftlinePublisher(kafka_config) as publisher:
        for i in range(EVENTS):
            amount = rng.gauss(0, 1) + (3.0 if i >= SHIFT_AT else 0.0)
            publisher.publish_prediction(
                model_id=MODEL,
                prediction_id=f"p{i}",
                features={"amount": amount, "age": rng.gauss(40, 5)},
                prediction=0.5,
                model_version="v1",
                timestamp=start + timedelta(seconds=i),
            )
        publisher.flush(timeout=10)
    producer = KafkaProducer(**producer_settings(kafka_config))
    for raw in INVALID:
        producer.send(kafka_config.topics.predictions, key=MODEL.encode(), value=raw)
    producer.flush(timeout=10)
    producer.close()


def test_worker_raises_drift_alert_and_dead_letters_invalid_input(tmp_path, kafka_config):
    ensure_topics(kafka_config)
    worker = _start_worker(tmp_path, kafka_config)
    consumer = KafkaConsumer(
        kafka_config.topics.alerts,
        kafka_config.topics.dead_letter,
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=500),
    )
    try:
        _publish(kafka_config)
        alerts: list[Alert] = []
        letters: list[DeadLetter] = []
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and worker.poll() is None:
            for record in consumer:
                if record.topic == kafka_config.topics.alerts:
                    assert record.key == MODEL.encode()
                    alerts.append(Alert.model_validate_json(record.value))
                else:
                    letters.append(DeadLetter.model_validate_json(record.value))
            drift = [a for a in alerts if a.kind == "feature_drift" and a.feature == "amount"]
            if drift and len(letters) >= len(INVALID):
                break
        log = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
        assert worker.poll() is None, f"worker exited:\n{log}"
        assert drift, f"no feature_drift alert on 'amount'; got {[(a.kind, a.feature) for a in alerts]}\n{log}"
        assert all(a.model_id == MODEL for a in alerts)
        assert not [a for a in alerts if a.kind == "feature_drift" and a.feature == "age"]
        assert {letter.original(): letter.reason.value for letter in letters} == INVALID
        for letter in letters:
            assert letter.source.topic == kafka_config.topics.predictions
            assert letter.source.partition is not None and letter.source.offset is not None
            assert letter.original_b64 == base64.b64encode(letter.original()).decode()
    finally:
        consumer.close()
        _stop(worker)
