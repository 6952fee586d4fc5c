"""A retraining system consumes the alerts topic with plain kafka-python
(`examples/retraining_consumer.py`, no Driftline import): real alerts from the core, published
as the worker publishes them, become one retraining request per firing period; records it
cannot read are skipped, not fatal."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaProducer

from monitor.contracts.batch import columns_of
from monitor.contracts.config import MonitorConfig
from monitor.contracts.events import PredictionEvent
from monitor.kafka.settings import producer_settings
from monitor.kafka.topics import ensure_topics
from monitor.monitoring.fleet import FleetMonitor

pytestmark = pytest.mark.broker


def _real_alerts() -> list:
    """Alerts of a stream whose `amount` shifts, from the same core the worker runs."""
    rng = random.Random(5)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        PredictionEvent.model_validate(
            {"model_id": "fraud-scorer", "prediction_id": f"p{i}", "model_version": "v1", "prediction": 0.5,
             "timestamp": start + timedelta(seconds=i),
             "features": {"amount": rng.gauss(0, 1) + (3 if i >= 900 else 0), "age": rng.gauss(40, 5)}}
        )
        for i in range(1600)
    ]  # fmt: skip
    config = MonitorConfig.model_validate({"reference": {"warmup_events": 500}, "window": {"size_events": 200}})
    fleet = FleetMonitor(config)
    return [raised.alert for raised in fleet.observe(*columns_of(events, range(len(events))))]


def test_retraining_consumer_reads_alerts_with_plain_kafka_python(kafka_config, repo_root):
    ensure_topics(kafka_config)
    alerts = _real_alerts()
    drift = [a for a in alerts if a.kind == "feature_drift" and a.status == "firing"]
    assert drift, [a.kind for a in alerts]
    producer = KafkaProducer(**producer_settings(kafka_config))
    topic = kafka_config.topics.alerts
    producer.send(topic, key=b"fraud-scorer", value=b"\xff not json")
    future = {**json.loads(drift[0].model_dump_json()), "schema_version": "2.0"}
    producer.send(topic, key=b"fraud-scorer", value=json.dumps(future).encode())
    for alert in alerts + drift:  # the drift alerts twice: a redelivery
        producer.send(topic, key=alert.model_id.encode(), value=alert.model_dump_json().encode())
    producer.flush(timeout=10)
    producer.close()

    result = subprocess.run(
        [sys.executable, "examples/retraining_consumer.py", "--bootstrap", kafka_config.bootstrap_servers,
         "--topic", topic, "--group", f"{kafka_config.consumer_group}-retrainer", "--idle-seconds", "8"],
        cwd=repo_root, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    requests = [json.loads(line) for line in result.stdout.splitlines()]
    retrain_on = {"feature_drift", "prediction_drift", "multivariate_drift", "performance_degradation"}
    expected = [a for a in alerts if a.kind in retrain_on and a.status == "firing"]
    assert [r["alert_id"] for r in requests] == list(dict.fromkeys(a.alert_id for a in expected))
    assert "feature_drift on amount" in {r["reason"] for r in requests}
    for request in requests:
        assert request["score"] >= request["threshold"]
        assert request["runbook_url"].endswith(request["reason"].split()[0] + ".md")
    assert "not an alert" in result.stderr and "schema_version 2.0" in result.stderr
