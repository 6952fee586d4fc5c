"""The outcome join on the real broker: outcomes published hours of event time after their
predictions are joined to them by the worker, evaluated per model, and raise a performance
alert; a worker killed mid-join and restarted counts every outcome once."""

from __future__ import annotations

import json
import random
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from worker_support import log_tail, start_worker, stop_worker

from monitor.client.publisher import DriftlinePublisher
from monitor.contracts.alert import Alert, AlertKind
from monitor.contracts.config import KafkaConfig
from monitor.contracts.deadletter import DeadLetter
from monitor.kafka.settings import consumer_settings, producer_settings
from monitor.kafka.topics import MODEL_STATE_TABLE, changelog_topic, ensure_topics
from monitor.stream.records import decode_state

pytestmark = pytest.mark.broker

MODEL = "churn-model"
SETTINGS = {"reference": {"warmup_events": 300}, "window": {"size_events": 200}}
START = datetime(2026, 1, 1, tzinfo=UTC)
LABEL_DELAY = timedelta(hours=6)


def _events(first: int, last: int, worse_from: int) -> tuple[list[dict], list[dict]]:
    """Predictions `first..last-1` of a classifier wrong 10% of the time, 45% from `worse_from`,
    and their outcomes `LABEL_DELAY` later."""
    rng = random.Random(first)
    predictions, outcomes = [], []
    for i in range(first, last):
        x = rng.gauss(0, 1)
        predicted = int(x > 0)
        wrong = rng.random() < (0.10 if i < worse_from else 0.45)
        at = START + timedelta(seconds=i)
        predictions.append(
            dict(model_id=MODEL, prediction_id=f"p{i}", features={"x": x}, prediction=predicted,
                 model_version="v1", timestamp=at)
        )  # fmt: skip
        label = 1 - predicted if wrong else predicted
        outcomes.append(dict(prediction_id=f"p{i}", label=label, timestamp=at + LABEL_DELAY))
    return predictions, outcomes


def _publish(kafka_config: KafkaConfig, predictions: list[dict], outcomes: list[dict]) -> None:
    with DriftlinePublisher(kafka_config) as publisher:
        for event in predictions:
            publisher.publish_prediction(**event)
        for event in outcomes:
            publisher.publish_outcome(**event)
        publisher.flush(timeout=10)


def test_outcomes_join_their_predictions_and_raise_a_performance_alert(tmp_path, kafka_config):
    ensure_topics(kafka_config)
    worker = start_worker(tmp_path, kafka_config, SETTINGS)
    consumer = KafkaConsumer(
        kafka_config.topics.alerts,
        kafka_config.topics.dead_letter,
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=500),
    )
    try:
        _publish(kafka_config, *_events(0, 3000, worse_from=1500))
        producer = KafkaProducer(**producer_settings(kafka_config))
        producer.send(kafka_config.topics.outcomes, key=b"p1", value=json.dumps({"prediction_id": "p1"}).encode())
        producer.flush(timeout=10)
        producer.close()
        alerts: list[Alert] = []
        letters: list[DeadLetter] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:
            for record in consumer:
                if record.topic == kafka_config.topics.alerts:
                    alerts.append(Alert.model_validate_json(record.value))
                else:
                    letters.append(DeadLetter.model_validate_json(record.value))
            if letters and any(a.kind == AlertKind.performance_degradation for a in alerts):
                break
        log = log_tail(tmp_path / "worker.log")
        assert worker.poll() is None, f"worker exited:\n{log}"
        degradation = [a for a in alerts if a.kind == AlertKind.performance_degradation]
        assert degradation, f"no performance_degradation; got {[a.kind for a in alerts]}\n{log}"
        details = degradation[0].evidence.details
        assert degradation[0].model_id == MODEL
        assert details["error_rate_recent"] > details["error_rate_reference"], details
        [letter] = letters
        assert letter.source.topic == kafka_config.topics.outcomes
        assert letter.reason == "schema" and "label" in letter.error
    finally:
        consumer.close()
        stop_worker(worker)


def _counted(changelog: KafkaConsumer, latest: dict[str, dict]) -> tuple[int, int]:
    """(predictions, outcomes) the model's latest saved state has counted, buffers included."""
    for record in changelog:
        state, covered = decode_state(record.value)
        latest[json.loads(record.key)] = state
    state = latest.get(MODEL)
    if state is None:
        return 0, 0
    evaluator = state["evaluator"]
    return state["drift"]["events"], evaluator["counters"].get("outcomes", 0) + len(evaluator["outcome_buffer"])


def _wait_until(changelog, latest, worker, log: Path, done) -> tuple[int, int]:
    deadline = time.monotonic() + 40
    counts = (0, 0)
    while time.monotonic() < deadline and worker.poll() is None:
        counts = _counted(changelog, latest)
        if done(counts):
            return counts
    raise AssertionError(f"state stuck at {counts} (predictions, outcomes)\n{log_tail(log)}")


def test_worker_killed_mid_join_counts_every_outcome_once(tmp_path, kafka_config):
    """SIGKILL while outcomes are being joined, restart, the rest of the stream: the model's
    state has counted each prediction and each outcome exactly once. (The join replays from its
    last saved store and joins the same items at the same positions; the model skips those.)"""
    ensure_topics(kafka_config)
    changelog = KafkaConsumer(
        changelog_topic(kafka_config, MODEL_STATE_TABLE),
        **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=200),
    )
    first = start_worker(tmp_path, kafka_config, SETTINGS, name="first")
    second = None
    latest: dict[str, dict] = {}
    try:
        _publish(kafka_config, *_events(0, 1500, worse_from=10_000))
        _wait_until(changelog, latest, first, tmp_path / "first.log", lambda c: c[1] > 0)
        first.send_signal(signal.SIGKILL)  # somewhere in the middle of the join
        first.wait(timeout=5)

        second = start_worker(tmp_path, kafka_config, SETTINGS, name="second")
        _publish(kafka_config, *_events(1500, 2500, worse_from=10_000))
        _wait_until(changelog, latest, second, tmp_path / "second.log", lambda c: c == (2500, 2500))
        time.sleep(3.0)  # a double count would show as a later, larger record (the timer flushes every 2 s)
        assert _counted(changelog, latest) == (2500, 2500)
        assert second.poll() is None
    finally:
        changelog.close()
        stop_worker(first)
        if second is not None:
            stop_worker(second)
